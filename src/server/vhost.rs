//! STUB: replaced by the routing branch.
use super::listen::ListenOptions;
use crate::conf::model::ServerConf;
use crate::conf::ConfError;
use crate::vars::eval::Captures;
use std::borrow::Cow;
use std::net::SocketAddr;
pub struct VhostTable {
    addrs: Vec<(SocketAddr, ListenOptions)>,
}
#[derive(Debug)]
pub struct BadHost;
pub fn normalize_host(h: &str) -> Result<Cow<'_, str>, BadHost> {
    let h = h.rsplit_once(':').map_or(h, |(a, _)| a);
    Ok(Cow::Owned(h.to_ascii_lowercase()))
}
impl VhostTable {
    pub fn build(servers: &[ServerConf]) -> Result<(VhostTable, Vec<String>), ConfError> {
        let mut addrs = Vec::new();
        for s in servers {
            for l in &s.listens {
                if let Some(a) = l.addr.socket_addr() {
                    if !addrs.iter().any(|(x, _)| *x == a) {
                        addrs.push((a, ListenOptions::default()));
                    }
                }
            }
        }
        Ok((VhostTable { addrs }, Vec::new()))
    }
    pub fn listen_addrs(&self) -> Vec<(SocketAddr, ListenOptions)> {
        self.addrs.clone()
    }
    pub fn select(&self, _local: SocketAddr, _host: Option<&str>) -> (usize, Option<Captures>) {
        (0, None)
    }
    pub fn default_for(&self, _local: SocketAddr) -> usize {
        0
    }
}
