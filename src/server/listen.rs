//! Listening sockets, bound with nginx's options (backlog, reuseport, ipv6only).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::vhost::ListenOptions;

/// Binds a listening TCP socket, as nginx's `ngx_open_listening_sockets()`.
pub fn bind(addr: SocketAddr, opts: ListenOptions) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(bind_std(addr, opts)?)
}

/// [`bind`] without a runtime: the socket (non-blocking) for
/// [`tokio::net::TcpListener::from_std`] later, so listeners can be bound
/// before the process forks into the background and starts its threads.
pub fn bind_std(addr: SocketAddr, opts: ListenOptions) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if opts.reuseport {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(opts.ipv6only)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(opts.backlog)?;
    Ok(socket.into())
}
