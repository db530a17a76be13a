//! GStreamer's log, routed into tracing (target `gstreamer`), and GStreamer's
//! initialisation, once per process.

use std::sync::OnceLock;

/// Map a configured level name to a GStreamer debug level (`None` if unknown).
pub fn gst_level(name: &str) -> Option<gstreamer::DebugLevel> {
    use gstreamer::DebugLevel;
    Some(match name.to_ascii_lowercase().as_str() {
        "none" => DebugLevel::None,
        "error" => DebugLevel::Error,
        "warning" | "warn" => DebugLevel::Warning,
        "fixme" => DebugLevel::Fixme,
        "info" => DebugLevel::Info,
        "debug" => DebugLevel::Debug,
        "log" => DebugLevel::Log,
        "trace" => DebugLevel::Trace,
        _ => return None,
    })
}

static GSTREAMER: OnceLock<Result<(), String>> = OnceLock::new();

/// Initialise GStreamer once per process and route its log into tracing
/// (target `gstreamer::<category>`), replacing GStreamer's own stderr printer.
pub fn init_gstreamer(level: &str) -> anyhow::Result<()> {
    GSTREAMER
        .get_or_init(|| {
            gstreamer::init().map_err(|e| e.to_string())?;
            gstreamer::log::remove_default_log_function();
            gstreamer::log::set_default_threshold(gst_level(level).unwrap_or(gstreamer::DebugLevel::Warning));
            gstreamer::log::set_active(true);
            gstreamer::log::add_log_function(|category, level, file, function, line, _object, message| {
                let text = message.get().map(|m| m.to_string()).unwrap_or_default();
                let category = category.name();
                let file = file.as_str();
                let function = function.as_str();
                match level {
                    gstreamer::DebugLevel::Error => {
                        tracing::error!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    gstreamer::DebugLevel::Warning | gstreamer::DebugLevel::Fixme => {
                        tracing::warn!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    gstreamer::DebugLevel::Info => {
                        tracing::info!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    gstreamer::DebugLevel::Debug => {
                        tracing::debug!(target: "gstreamer", category, file, function, line, "{text}")
                    }
                    _ => tracing::trace!(target: "gstreamer", category, file, function, line, "{text}"),
                }
            });
            tracing::debug!(version = %gstreamer::version_string(), "GStreamer initialised");
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("initialising GStreamer: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Collects formatted events so the test can read what reached tracing.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn gstreamer_log_messages_arrive_in_tracing() {
        init_gstreamer("warning").unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(fmt::layer().with_writer(move || writer.clone()).with_ansi(false).with_target(true));
        let category = gstreamer::DebugCategory::new("rh-test", gstreamer::DebugColorFlags::empty(), Some("test"));
        tracing::subscriber::with_default(subscriber, || {
            gstreamer::warning!(category, "bridged warning {}", 42);
            gstreamer::debug!(category, "below the threshold");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("bridged warning 42"), "{text}");
        assert!(text.contains("gstreamer"), "target names GStreamer: {text}");
        assert!(text.contains("rh-test"), "category is kept: {text}");
        assert!(!text.contains("below the threshold"), "threshold applies: {text}");
    }

    #[test]
    fn level_names_map_to_gstreamer_levels() {
        assert_eq!(gst_level("WARN"), Some(gstreamer::DebugLevel::Warning));
        assert_eq!(gst_level("debug"), Some(gstreamer::DebugLevel::Debug));
        assert_eq!(gst_level("loud"), None);
    }
}
