//! The cgroup v2 filesystem, for cgroups the kernel never announced (seen before the tracer
//! started, or evicted): a cgroup id is its directory's inode and, to the kernel's file-handle
//! calls, its handle (`FILEID_KERNFS`), so it is found without walking the tree — while it
//! still exists. The workload filters walk the tree once at start-up.
use std::{
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
};

/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node's 64-bit id as a file handle.
const FILEID_KERNFS: i32 = 0xfe;

pub struct Cgroupfs {
    mount: PathBuf,
    dir: File,
}

impl Cgroupfs {
    /// The cgroup v2 mount of this mount namespace (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` beside cgroup v1), from `/proc/self/mounts`.
    pub fn find() -> io::Result<Self> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        let mount = mount_point(&mounts).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup2 filesystem in /proc/self/mounts",
            )
        })?;
        Self::at(mount)
    }

    /// The cgroup v2 hierarchy mounted at `mount`.
    pub fn at(mount: PathBuf) -> io::Result<Self> {
        let dir = File::open(&mount)?;
        Ok(Self { mount, dir })
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The path (from the hierarchy's root) of the cgroup with this id, if it exists now.
    pub fn path_of(&self, cgroup_id: u64) -> Option<String> {
        let fd = self.open_by_id(cgroup_id).ok()?;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        let rel = link.strip_prefix(&self.mount).ok()?;
        Some(format!("/{}", rel.to_string_lossy()).replace("//", "/"))
    }

    pub(crate) fn open_by_id(&self, cgroup_id: u64) -> io::Result<OwnedFd> {
        // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[8]; }
        let mut handle = [0u8; 16];
        handle[..4].copy_from_slice(&8u32.to_ne_bytes());
        handle[4..8].copy_from_slice(&FILEID_KERNFS.to_ne_bytes());
        handle[8..].copy_from_slice(&cgroup_id.to_ne_bytes());
        // SAFETY: `handle` is a complete file_handle of 16 bytes that outlives the call; the
        // mount fd is open. The call only reads the handle and returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                self.dir.as_raw_fd(),
                handle.as_mut_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: open_by_handle_at returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Every cgroup now in the hierarchy as (id, path), at most `limit` of them, parents first.
    pub fn walk(&self, limit: usize) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut dirs = vec![(self.mount.clone(), String::new())];
        while let Some((dir, path)) = dirs.pop() {
            if out.len() >= limit {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            out.push((
                meta.ino(),
                if path.is_empty() {
                    "/".into()
                } else {
                    path.clone()
                },
            ));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    dirs.push((e.path(), format!("{path}/{name}")));
                }
            }
        }
        out
    }
}

/// The mount point of the first cgroup2 filesystem in a `/proc/self/mounts` text.
fn mount_point(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape(dir)))
    })
}

/// `/proc/self/mounts` escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_on_hybrid_and_unified_hosts() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(
            mount_point(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert_eq!(mount_point(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(
            mount_point("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
        assert_eq!(
            mount_point("cgroup2 /host\\040root/cg cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/host root/cg"))
        );
    }
}
