//! tracefs: where it is mounted, and the field layout of a tracepoint from its `format` file.
use std::{
    fs,
    path::{Path, PathBuf},
};

/// Where tracefs is normally mounted, in the order they are tried.
pub const DEFAULT_MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted (looked for events/ under {tried}): mount it with \
         `mount -t tracefs nodev /sys/kernel/tracing` (as root), or pass --tracefs PATH"
    )]
    NotMounted { tried: String },
    #[error(
        "tracefs at {root} cannot be read ({source}): it is root's (mode 0700 on most \
         distributions); run as root, or grant CAP_DAC_READ_SEARCH as well as CAP_BPF and \
         CAP_PERFMON (`setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep`, or the unit's \
         AmbientCapabilities=)"
    )]
    Unreadable {
        root: String,
        source: std::io::Error,
    },
    #[error("tracepoint {group}:{name} not found ({path}): {source}")]
    Missing {
        group: String,
        name: String,
        path: String,
        source: std::io::Error,
    },
}

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs at `explicit`, or at one of the default mount points.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, TracefsError> {
        let candidates: Vec<PathBuf> = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => DEFAULT_MOUNTS.iter().map(PathBuf::from).collect(),
        };
        for root in &candidates {
            if root.join("events").is_dir() {
                return Ok(Self { root: root.clone() });
            }
            // A mount point this user may not look into reads as "no events/ there".
            if let Err(source) = fs::read_dir(root)
                && source.kind() == std::io::ErrorKind::PermissionDenied
            {
                return Err(TracefsError::Unreadable {
                    root: root.display().to_string(),
                    source,
                });
            }
        }
        let tried = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(TracefsError::NotMounted { tried })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads and parses `events/<group>/<name>/format`.
    pub fn format(&self, group: &str, name: &str) -> Result<TracepointFormat, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(group)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|source| TracefsError::Missing {
            group: group.into(),
            name: name.into(),
            path: path.display().to_string(),
            source,
        })?;
        Ok(TracepointFormat::parse(&text))
    }
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// The fields of a tracepoint record, as its `format` file lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TracepointFormat {
    pub fields: Vec<Field>,
}

impl TracepointFormat {
    /// Parses lines like `\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;`.
    pub fn parse(text: &str) -> Self {
        let fields = text.lines().filter_map(parse_field_line).collect();
        Self { fields }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

fn parse_field_line(line: &str) -> Option<Field> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.trim().split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d);
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.parse().ok();
        }
    }
    // The name is the declaration's last word, without an array suffix.
    let last = decl?.split_whitespace().last()?;
    let name = last.split('[').next()?.trim_start_matches('*');
    Some(Field {
        name: name.to_string(),
        offset: offset?,
        size: size?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEND_RESET: &str = "name: tcp_send_reset
ID: 1234
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;

print fmt: \"skbaddr=%p\", REC->skbaddr
";

    #[test]
    fn parses_pointer_enum_and_array_fields() {
        let f = TracepointFormat::parse(SEND_RESET);
        assert_eq!(f.fields.len(), 5);
        assert_eq!(
            f.field("skaddr"),
            Some(&Field {
                name: "skaddr".into(),
                offset: 16,
                size: 8
            })
        );
        assert_eq!(f.field("reason").map(|f| f.offset), Some(28));
        assert_eq!(f.field("saddr").map(|f| (f.offset, f.size)), Some((32, 28)));
        assert_eq!(f.field("print"), None);
    }

    #[test]
    fn missing_mount_names_the_fix() {
        let err = Tracefs::locate(Some(Path::new("/nonexistent-tracefs"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mount -t tracefs"), "{msg}");
        assert!(msg.contains("/nonexistent-tracefs"), "{msg}");
    }
}
