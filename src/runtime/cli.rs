//! The command line, as nginx's: `-t`, `-T`, `-q`, `-p`, `-c`, `-e`, `-g`,
//! `-s`, `-v`, `-V`, `-h`.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::conf::{self, LoadOptions};

/// The nginx release whose behaviour sluice implements.
pub const NGINX_VERSION: &str = "1.22.1";

/// nginx modules present in sluice (`--with-...` for those nginx builds only
/// on request) and absent from it (`--without-...` for those nginx builds by
/// default). Kept truthful as features land.
const CONFIGURE_WITH: &[&str] = &[];
const CONFIGURE_WITHOUT: &[&str] = &[
    "--without-http_charset_module",
    "--without-http_ssi_module",
    "--without-http_userid_module",
    "--without-http_access_module",
    "--without-http_auth_basic_module",
    "--without-http_mirror_module",
    "--without-http_autoindex_module",
    "--without-http_geo_module",
    "--without-http_split_clients_module",
    "--without-http_referer_module",
    "--without-http_fastcgi_module",
    "--without-http_uwsgi_module",
    "--without-http_scgi_module",
    "--without-http_grpc_module",
    "--without-http_memcached_module",
    "--without-http_limit_conn_module",
    "--without-http_limit_req_module",
    "--without-http_empty_gif_module",
    "--without-http_browser_module",
    "--without-http-cache",
];

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    disable_help_flag = true,
    disable_version_flag = true,
    override_usage = "sluice [-?hvVtTq] [-s signal] [-p prefix] [-e filename] [-c filename] [-g directives]\n       sluice echo [--listen ADDR]\n       sluice wscat --connect URL"
)]
struct Args {
    /// this help
    #[arg(short = '?', short_alias = 'h')]
    help: bool,
    /// show version and exit
    #[arg(short = 'v')]
    version: bool,
    /// show version and configure options then exit
    #[arg(short = 'V')]
    version_long: bool,
    /// test configuration and exit
    #[arg(short = 't')]
    test: bool,
    /// test configuration, dump it and exit
    #[arg(short = 'T')]
    dump: bool,
    /// suppress non-error messages during configuration testing
    #[arg(short = 'q')]
    quiet: bool,
    /// send signal to the running process: stop, quit, reopen, reload
    #[arg(short = 's', value_name = "signal")]
    signal: Option<String>,
    /// set prefix path (default: the current directory)
    #[arg(short = 'p', value_name = "prefix")]
    prefix: Option<PathBuf>,
    /// set error log file (default: logs/error.log)
    #[arg(short = 'e', value_name = "filename")]
    error_log: Option<String>,
    /// set configuration file (default: conf/nginx.conf)
    #[arg(short = 'c', value_name = "filename")]
    conf: Option<PathBuf>,
    /// set global directives out of configuration file
    #[arg(short = 'g', value_name = "directives")]
    global: Option<String>,
}

const HELP: &str = "Options:
  -?,-h         : this help
  -v            : show version and exit
  -V            : show version and configure options then exit
  -t            : test configuration and exit
  -T            : test configuration, dump it and exit
  -q            : suppress non-error messages during configuration testing
  -s signal     : send signal to the running process: stop, quit, reopen, reload
  -p prefix     : set prefix path (default: the current directory)
  -e filename   : set error log file (default: logs/error.log)
  -c filename   : set configuration file (default: conf/nginx.conf)
  -g directives : set global directives out of configuration file

Demo peers:
  sluice echo [--listen ADDR]   WebSocket echo server (like the guide's Node server.js)
  sluice wscat --connect URL    interactive WebSocket client (like npm's wscat)

With no configuration file at conf/nginx.conf and no -c, sluice runs its
embedded demo: the proxy on 127.0.0.1:8020 in front of the echo server on
127.0.0.1:8010.
";

/// Writes one line to stderr as nginx does: `sluice: [level] text`.
pub fn say(level: Option<&str>, text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = match level {
        Some(l) => writeln!(err, "sluice: [{l}] {text}"),
        None => writeln!(err, "sluice: {text}"),
    };
}

/// Entry point of the `sluice` binary.
pub fn main(argv: Vec<OsString>) -> ExitCode {
    match argv.get(1).and_then(|a| a.to_str()) {
        Some("echo") => return crate::tools::echo::run(argv[2..].to_vec()),
        Some("wscat") => return crate::tools::wscat::run(argv[2..].to_vec()),
        _ => {}
    }
    let args = match Args::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid option");
            say(None, first.trim_start_matches("error: "));
            return ExitCode::FAILURE;
        }
    };
    if args.help || args.version || args.version_long {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "sluice version: sluice/{}", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(err, "nginx version: nginx/{NGINX_VERSION}");
        if args.version_long {
            let _ = writeln!(err, "built with rustc, TLS: none yet");
            let flags: Vec<&str> = ["--prefix=.", "--conf-path=conf/nginx.conf"]
                .into_iter()
                .chain(CONFIGURE_WITH.iter().copied())
                .chain(CONFIGURE_WITHOUT.iter().copied())
                .collect();
            let _ = writeln!(err, "configure arguments: {}", flags.join(" "));
        }
        if args.help {
            let _ = writeln!(
                err,
                "Usage: sluice [-?hvVtTq] [-s signal] [-p prefix] [-e filename] [-c filename] [-g directives]\n"
            );
            let _ = write!(err, "{HELP}");
        }
        return ExitCode::SUCCESS;
    }

    // Absolute, so that messages name files as nginx does.
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let prefix = cwd.join(args.prefix.clone().unwrap_or_default());
    let explicit = args.conf.is_some() || args.prefix.is_some();
    let opts = LoadOptions {
        prefix: prefix.clone(),
        conf_file: args
            .conf
            .clone()
            .unwrap_or_else(|| PathBuf::from("conf/nginx.conf")),
        global_directives: args.global.clone(),
    };
    let conf_path = opts.conf_path();
    let use_demo = !explicit && !conf_path.exists() && args.signal.is_none();

    if let Some(sig) = &args.signal {
        return super::signal::send(&opts, sig);
    }

    let loaded = if use_demo {
        super::demo::config(&prefix)
    } else {
        conf::load(&opts)
    };
    let mut config = match loaded {
        Ok(c) => c,
        Err(e) => {
            say(Some("emerg"), &e.to_string());
            if args.test || args.dump {
                say(
                    None,
                    &format!("configuration file {} test failed", conf_path.display()),
                );
            }
            return ExitCode::FAILURE;
        }
    };
    if args.test || args.dump {
        // nginx's -q hides only the two "ok" lines; warnings are log lines.
        for w in &config.warnings {
            say(Some("warn"), w);
        }
        if !args.quiet {
            say(
                None,
                &format!(
                    "the configuration file {} syntax is ok",
                    conf_path.display()
                ),
            );
            say(
                None,
                &format!(
                    "configuration file {} test is successful",
                    conf_path.display()
                ),
            );
        }
        if args.dump {
            // As nginx: each file once, its text verbatim, then one newline.
            let mut out = std::io::stdout().lock();
            let mut seen = std::collections::HashSet::new();
            for (path, text) in &config.sources.files {
                if !seen.insert(path) {
                    continue;
                }
                let _ = writeln!(out, "# configuration file {}:", path.display());
                let _ = out.write_all(text.as_bytes());
                let _ = writeln!(out);
            }
        }
        return ExitCode::SUCCESS;
    }
    for w in &config.warnings {
        say(Some("warn"), w);
    }
    if let Some(e) = &args.error_log {
        config.main.error_log.target = if e == "stderr" {
            conf::model::ErrorLogTarget::Stderr
        } else {
            conf::model::ErrorLogTarget::File(prefix.join(e))
        };
    }
    let reload_from = (!use_demo).then_some(opts);
    super::run::run(config, reload_from, use_demo)
}
