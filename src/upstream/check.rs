//! Active health checks (Tengine's `check`).
