//! STUB: replaced by the upstream branch.
use crate::conf::model::UpstreamConf;
use crate::vars::Template;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Upstreams {
    groups: Vec<(usize, Group)>,
}
pub struct Group {
    conf: Arc<UpstreamConf>,
    next: AtomicUsize,
}
#[derive(Default)]
pub struct Tried {
    n: usize,
}
pub struct PickInput<'a> {
    pub client_ip: IpAddr,
    pub hash_key: Option<&'a [u8]>,
}
#[derive(Debug)]
pub enum PickError {
    NoLiveUpstreams,
}
pub struct PeerGuard {
    addr: SocketAddr,
}
impl PeerGuard {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn fail(&self) {}
    pub fn success(&self) {}
}
impl Upstreams {
    pub fn build(confs: &[Arc<UpstreamConf>], _prev: Option<&Upstreams>) -> Upstreams {
        Upstreams {
            groups: confs
                .iter()
                .map(|c| {
                    (
                        Arc::as_ptr(c) as usize,
                        Group {
                            conf: c.clone(),
                            next: AtomicUsize::new(0),
                        },
                    )
                })
                .collect(),
        }
    }
    pub fn group(&self, c: &Arc<UpstreamConf>) -> Option<&Group> {
        self.groups
            .iter()
            .find(|(p, _)| *p == Arc::as_ptr(c) as usize)
            .map(|(_, g)| g)
    }
}
impl Group {
    pub fn tries(&self) -> usize {
        self.conf.servers.iter().map(|s| s.addrs.len()).sum()
    }
    pub fn hash_key_template(&self) -> Option<&Template> {
        None
    }
    pub fn pick(&self, _i: &PickInput<'_>, tried: &mut Tried) -> Result<PeerGuard, PickError> {
        let addrs: Vec<SocketAddr> = self
            .conf
            .servers
            .iter()
            .flat_map(|s| s.addrs.clone())
            .collect();
        if tried.n >= addrs.len() {
            return Err(PickError::NoLiveUpstreams);
        }
        tried.n += 1;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
        Ok(PeerGuard { addr: addrs[i] })
    }
}
