//! Serving: listeners, connections, virtual servers and locations, and the
//! immutable per-load view (`Generation`) every connection keeps for its life.

pub mod conn;
pub mod guard;
pub mod h2;
pub mod listen;
pub mod location;
pub mod request;
pub mod tls;
pub mod uri;
pub mod vhost;

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conf::model::{HttpConf, LocationConf, Settings};
use crate::conf::{ConfError, Config};
use crate::log::AccessLogs;
use crate::proxy::headers::HeaderPlan;
use crate::upstream::Upstreams;
use request::HeaderNeeds;

/// Everything a request needs that a load fixes, built once per load.
pub struct Generation {
    pub id: u64,
    pub config: Arc<Config>,
    pub vhosts: Arc<vhost::VhostTable>,
    /// tls: acceptors for the addresses with `ssl`, certificates as of this load.
    pub tls: tls::TlsTable,
    /// Location lookup per server, by server index.
    pub locations: Vec<location::LocationIndex>,
    pub upstreams: Arc<Upstreams>,
    /// `proxy_set_header` plans by the address of the `Settings` they serve.
    /// Per `Settings` (by address): the `proxy_set_header` plan and the
    /// headers its access logs read, both known at load.
    plans: Plans,
    fallback_plan: (HeaderPlan, Arc<HeaderNeeds>),
    empty_http: HttpConf,
    fallback_settings: Arc<Settings>,
    pub logs: Arc<AccessLogs>,
    /// Cancelled to end tunnels on shutdown.
    pub shutdown: CancellationToken,
    /// h2: cancelled when a reload replaces this generation, so HTTP/2
    /// connections send GOAWAY and clients reconnect to the new one.
    pub retired: CancellationToken,
    /// Open WebSocket tunnels, so shutdown can wait for them.
    pub tunnels: TaskTracker,
    /// Per-location cancellation of WebSocket tunnels, shared by every
    /// generation (ops: `websocket_drain_on_reload`).
    pub tunnel_scopes: Arc<crate::proxy::drain::LocationScopes>,
}

impl Generation {
    /// Builds the runtime view of `config`, carrying upstream state over
    /// from `prev` for peers that stay.
    pub fn build(
        config: Config,
        prev: Option<&Generation>,
        id: u64,
        logs: Arc<AccessLogs>,
        shutdown: CancellationToken,
        tunnels: TaskTracker,
    ) -> Result<Generation, ConfError> {
        let empty_http = HttpConf {
            servers: Vec::new(),
            upstreams: Vec::new(),
            maps: Vec::new(),
            log_formats: HashMap::new(),
            set_vars: 0,
        };
        let http = config.http.as_ref().unwrap_or(&empty_http);
        let vhosts = Arc::new(vhost::VhostTable::build(&http.servers)?);
        let tls = tls::TlsTable::build(&vhosts, &http.servers)?;
        for w in &vhosts.warnings {
            crate::error_log!(crate::conf::model::LogLevel::Warn, "{w}");
        }
        let locations = http
            .servers
            .iter()
            .map(|s| location::LocationIndex::new(&s.locations))
            .collect();
        let upstreams = Arc::new(Upstreams::new(
            &http.upstreams,
            prev.map(|p| p.upstreams.as_ref()),
        ));
        let mut plans = Plans::default();
        for s in &http.servers {
            add_plan(&mut plans, &s.settings);
            collect_plans(&mut plans, &s.locations);
        }
        let fallback_settings = Arc::new(crate::conf::model::LevelSettings::default().resolve());
        Ok(Generation {
            id,
            fallback_plan: plans_for(&fallback_settings),
            fallback_settings,
            config: Arc::new(config),
            vhosts,
            tls,
            locations,
            upstreams,
            plans,
            empty_http,
            logs,
            shutdown,
            retired: CancellationToken::new(),
            tunnels,
            tunnel_scopes: prev.map_or_else(Default::default, |p| p.tunnel_scopes.clone()),
        })
    }

    pub fn http(&self) -> &HttpConf {
        self.config.http.as_ref().unwrap_or(&self.empty_http)
    }

    fn per_settings(&self, settings: &Arc<Settings>) -> &(HeaderPlan, Arc<HeaderNeeds>) {
        self.plans
            .get(&(Arc::as_ptr(settings) as usize))
            .unwrap_or(&self.fallback_plan)
    }

    pub fn header_plan(&self, settings: &Arc<Settings>) -> &HeaderPlan {
        &self.per_settings(settings).0
    }

    /// The headers the access logs of `settings` can read.
    pub fn log_needs(&self, settings: &Arc<Settings>) -> Arc<HeaderNeeds> {
        self.per_settings(settings).1.clone()
    }

    pub fn log_needs_ref(&self, settings: &Arc<Settings>) -> &HeaderNeeds {
        &self.per_settings(settings).1
    }

    /// Settings of the default server for connections to `local`, for what
    /// must be decided before any request is read.
    pub fn default_settings(&self, addr: Option<usize>) -> Arc<Settings> {
        let idx = addr
            .and_then(|i| self.vhosts.addrs().get(i))
            .map_or(0, |a| a.default_server);
        self.http()
            .servers
            .get(idx)
            .map(|s| s.settings.clone())
            .unwrap_or_else(|| self.fallback_settings.clone())
    }
}

fn plans_for(s: &Settings) -> (HeaderPlan, Arc<HeaderNeeds>) {
    (HeaderPlan::build(s), Arc::new(HeaderNeeds::for_logs(s)))
}

/// By the address of the settings: looked up per request, so not SipHash.
type Plans = fnv::FnvHashMap<usize, (HeaderPlan, Arc<HeaderNeeds>)>;

fn add_plan(plans: &mut Plans, s: &Arc<Settings>) {
    plans
        .entry(Arc::as_ptr(s) as usize)
        .or_insert_with(|| plans_for(s));
}

fn collect_plans(plans: &mut Plans, locs: &[LocationConf]) {
    for l in locs {
        add_plan(plans, &l.settings);
        collect_plans(plans, &l.children);
    }
}

use regex::{CaptureLocations, Regex};

/// The captures of the regex that matched (a `~` location or a `~` server
/// name), as offsets into the string it ran on (`$uri` or the host), for
/// `$1`..`$9` and named captures.
#[derive(Debug, Clone)]
pub struct RegexCaptures<'a> {
    pub regex: &'a Regex,
    pub locs: CaptureLocations,
}

impl RegexCaptures<'_> {
    /// Group `i` (0 is the whole match) as a byte range of the subject.
    pub fn get(&self, i: usize) -> Option<(usize, usize)> {
        self.locs.get(i)
    }

    /// A named group as a byte range of the subject.
    pub fn name(&self, name: &str) -> Option<(usize, usize)> {
        let i = self.regex.capture_names().position(|n| n == Some(name))?;
        self.locs.get(i)
    }

    /// The number of groups, the whole match included.
    pub fn len(&self) -> usize {
        self.locs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locs.len() == 0
    }
}

/// Runs `regex` on `subject`, keeping its captures when it matches.
pub(crate) fn run_regex<'a>(regex: &'a Regex, subject: &str) -> Option<RegexCaptures<'a>> {
    let mut locs = regex.capture_locations();
    regex.captures_read(&mut locs, subject)?;
    Some(RegexCaptures { regex, locs })
}
