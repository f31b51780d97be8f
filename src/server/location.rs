//! STUB: replaced by the routing branch.
use crate::conf::model::{LocationConf, LocationMatch};
use crate::vars::eval::Captures;
pub struct LocationIndex {
    locs: Vec<LocationConf>,
}
impl LocationIndex {
    pub fn new(locs: &[LocationConf]) -> Self {
        LocationIndex {
            locs: locs.to_vec(),
        }
    }
    pub fn find(&self, uri: &str) -> Option<(&LocationConf, Option<Captures>)> {
        let mut best: Option<&LocationConf> = None;
        for l in &self.locs {
            if let LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) = &l.matcher {
                if uri.starts_with(p.as_str())
                    && best.is_none_or(|b| match &b.matcher {
                        LocationMatch::Prefix(q) | LocationMatch::PrefixNoRegex(q) => {
                            q.len() < p.len()
                        }
                        _ => true,
                    })
                {
                    best = Some(l);
                }
            }
        }
        best.map(|l| (l, None))
    }
}
