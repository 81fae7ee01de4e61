//! The byte-copy relay: accepts on loopback and copies bytes both ways to
//! the upstream with `tokio::io::copy_bidirectional`, without reading them.
//! It is the ceiling any TDS proxy can reach on the machine: the same
//! sockets and hops as tdsguard, none of the parsing, TLS or rewriting.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bench::BenchError;

/// A running byte-copy relay.
pub struct ByteCopy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ByteCopy {
    /// Binds a free loopback port and relays every connection to `upstream`.
    /// Must be called inside the runtime that is to carry the copying.
    pub async fn start(upstream: SocketAddr) -> Result<ByteCopy, BenchError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(BenchError::io("binding the byte-copy relay"))?;
        let addr = listener
            .local_addr()
            .map_err(BenchError::io("reading the byte-copy address"))?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, upstream, stopped));
        Ok(ByteCopy {
            addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting; open copies end when their peers close.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => return,
        };
        let Ok((client, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(copy_one(client, upstream));
    }
}

/// One connection: connect upstream, then copy until either side closes.
/// Nagle is off on both legs, as in tdsguard.
async fn copy_one(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_out_equal_bytes_in() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.expect("accept");
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let relay = ByteCopy::start(echo_addr).await.expect("relay");
        let mut c = TcpStream::connect(relay.addr()).await.expect("connect");
        let sent: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        c.write_all(&sent).await.expect("write");
        let mut got = vec![0u8; sent.len()];
        c.read_exact(&mut got).await.expect("read");
        assert_eq!(got, sent);
        drop(c);
        relay.shutdown().await;
    }
}
