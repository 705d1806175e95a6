//! A throwaway Redis server on 127.0.0.1, for tests and benchmarks: Debian's `redis-server`,
//! no persistence, stopped when dropped.

use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LocalRedis {
    child: Child,
    pub port: u16,
}

impl LocalRedis {
    /// Starts a server on a free port.
    pub fn start() -> io::Result<LocalRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Self::start_on(port)
    }

    /// Starts a server on `port` and waits until it listens. `DEBUG SLEEP` is allowed from
    /// 127.0.0.1, so that a test can make it slow.
    pub fn start_on(port: u16) -> io::Result<LocalRedis> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("starting redis-server (Debian's redis-server package): {e}"),
                )
            })?;
        let server = LocalRedis { child, port };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "redis-server did not listen",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server now.
    pub fn stop(self) {}
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
