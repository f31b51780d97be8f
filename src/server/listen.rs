//! Listening sockets: bound with nginx's options (backlog, reuseport, ipv6only).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Options of one bound socket, merged from every `listen` naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    pub reuseport: bool,
    pub backlog: Option<i32>,
    pub ipv6only: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            reuseport: false,
            backlog: None,
            ipv6only: true,
        }
    }
}

/// nginx's default backlog on Linux.
const DEFAULT_BACKLOG: i32 = 511;

/// Binds a listening TCP socket, as nginx's `ngx_open_listening_sockets()`.
pub fn bind(addr: SocketAddr, opts: ListenOptions) -> std::io::Result<std::net::TcpListener> {
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
    socket.listen(opts.backlog.unwrap_or(DEFAULT_BACKLOG))?;
    Ok(socket.into())
}
