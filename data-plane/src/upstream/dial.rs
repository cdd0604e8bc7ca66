//! Making connections to targets: TCP (no Nagle delay), then TLS for
//! `https` and `grpcs` targets, verified by the service's settings
//! ([`super::tls`]) and offering one ALPN protocol (`http/1.1` or `h2`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::body::BoxError;

/// How connections to one service's targets are made.
#[derive(Clone)]
pub(super) struct Dialer {
    /// Bounds the whole connect: TCP and TLS (the HTTP/2 handshake too, see `h2`).
    pub(super) connect_timeout: Duration,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").field("connect_timeout", &self.connect_timeout).finish_non_exhaustive()
    }
}

impl Dialer {
    /// `tls`: the service's settings, offering only `alpn`.
    pub(super) fn new(mut tls: rustls::ClientConfig, alpn: &[u8], connect_timeout: Duration) -> Self {
        tls.alpn_protocols = vec![alpn.to_vec()];
        Self { connect_timeout, tls: tokio_rustls::TlsConnector::from(Arc::new(tls)) }
    }

    /// A connection to `authority` (`default_port` when it names none),
    /// over TLS when `tls`; without a time bound (callers set theirs).
    pub(super) async fn dial(&self, authority: &Authority, default_port: u16, tls: bool) -> Result<Io, BoxError> {
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, authority.port_u16().unwrap_or(default_port))).await?;
        tcp.set_nodelay(true)?;
        if !tls {
            return Ok(Io::Tcp(tcp));
        }
        let name = ServerName::try_from(host.to_owned())?;
        Ok(Io::Tls(Box::new(self.tls.connect(name, tcp).await?)))
    }
}

/// A connection to a target.
#[derive(Debug)]
pub enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// The protocol the target chose in the TLS handshake.
    pub(super) fn alpn(&self) -> Option<&[u8]> {
        match self {
            Self::Tcp(_) => None,
            Self::Tls(stream) => stream.get_ref().1.alpn_protocol(),
        }
    }

    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(tcp) => tcp,
            Self::Tls(stream) => stream.get_ref().0,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}
