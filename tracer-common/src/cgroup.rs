//! `RawCgroup`: the cgroup record. The first connect the programs see from a cgroup puts the
//! names on that cgroup's v2 path in the ring buffer, read in the kernel while the connecting
//! task is in it — so the workload (unit, container, pod) is known even when the process exits
//! and its cgroup is removed before its failure is reported. The `CGROUPS` map remembers which
//! cgroups were announced, and userspace's verdict on each for the workload filters.

/// The cgroup record's kind (the first byte of every ring-buffer record is its kind).
pub const KIND_CGROUP: u8 = 6;

/// Levels of the path read, leaf first: deeper paths keep their leafmost levels.
pub const CGROUP_LEVELS: usize = 8;
/// Bytes kept of each level's name, NUL included (container scopes are about 85 bytes): names
/// of up to 127 bytes are whole; a longer one (the kernel allows 255) is cut, and marked in
/// `RawCgroup::cut`.
pub const CGROUP_NAME_LEN: usize = 128;

/// Values of the `CGROUPS` map: announced, and not (yet) judged by the workload filters.
pub const CGROUP_SEEN: u8 = 0;
/// Its connects match the workload filters.
pub const CGROUP_WANTED: u8 = 1;
/// Its connects do not match the workload filters: dropped at connect().
pub const CGROUP_UNWANTED: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct RawCgroup {
    /// `KIND_CGROUP`.
    pub kind: u8,
    /// How many of `names` were read (0: the root cgroup, or the path could not be read).
    pub levels: u8,
    /// 1 when the path has more than `CGROUP_LEVELS` levels below the root.
    pub truncated: u8,
    /// Bit `i` set when `names[i]` is only the first `CGROUP_NAME_LEN - 1` bytes of a longer
    /// name: userspace completes it from the cgroup filesystem, or derives nothing from it.
    pub cut: u8,
    pub _pad: [u8; 4],
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 directory's inode.
    pub cgroup_id: u64,
    /// NUL-terminated directory names, leaf first: `names[0]` is the cgroup's own name,
    /// `names[1]` its parent's, up to the level below the root.
    pub names: [[u8; CGROUP_NAME_LEN]; CGROUP_LEVELS],
}

pub const RAW_CGROUP_SIZE: usize = 16 + CGROUP_NAME_LEN * CGROUP_LEVELS;
const _: () = assert!(core::mem::size_of::<RawCgroup>() == RAW_CGROUP_SIZE);

// SAFETY: repr(C), only integers and byte arrays, explicit padding: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for RawCgroup {}
