//! What the kernel counts per loaded program (`BPF_OBJ_GET_INFO_BY_FD`): hits it skipped because
//! another BPF program was already running on that CPU (`recursion_misses`, always counted), and
//! runs and run time (only while `kernel.bpf_stats_enabled` is 1).
use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsRawFd, BorrowedFd},
};

use aya_obj::generated::bpf_prog_info;

/// `BPF_OBJ_GET_INFO_BY_FD` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The `info` member of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Runs counted while `kernel.bpf_stats_enabled` was 1.
    pub runs: u64,
    /// Their total time.
    pub run_time_ns: u64,
    /// Hits the kernel skipped: another BPF program was running on that CPU (kernels ≥ 6.7 count
    /// these for tracepoint programs; older ones report 0).
    pub recursion_misses: u64,
}

impl std::ops::AddAssign for ProgramStats {
    fn add_assign(&mut self, o: Self) {
        self.runs += o.runs;
        self.run_time_ns += o.run_time_ns;
        self.recursion_misses += o.recursion_misses;
    }
}

/// The statistics of the program behind `fd`.
pub fn read(fd: BorrowedFd<'_>) -> io::Result<ProgramStats> {
    // SAFETY: bpf_prog_info holds only integers and byte arrays: all-zero is a valid value.
    let mut info: bpf_prog_info = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes to `info`, which outlives the call, and
    // reads `size_of::<InfoAttr>()` bytes of `attr`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ProgramStats {
        runs: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    })
}
