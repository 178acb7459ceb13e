//! The calling task's cgroup, noted at connect() (ARCHITECTURE.md §10): the first connect seen
//! from a cgroup submits a `RawCgroup` with the names on its v2 path, read here while the task
//! is still in it; `CGROUPS` remembers it, with userspace's verdict for the workload filters.
//! Later connects from it cost one per-CPU slot compare (the same cgroup as this CPU's last
//! connect) or one hash lookup.
use aya_ebpf::helpers::generated::{bpf_get_current_task, bpf_probe_read_kernel_str};
use tracer_common::{
    CGROUP_LEVELS, CGROUP_NAME_LEN, CGROUP_UNWANTED, CGROUP_WANTED, Counter, KIND_CGROUP, RawCgroup,
};

use crate::{
    CGROUPS, EVENTS, LAST_CGROUP,
    emit::{count, wakeup_flag},
    globals::{config, offset},
    read::member,
};

/// Notes the cgroup of the task calling connect(); false when the workload filters exclude it.
#[inline(always)]
pub fn note(cgroup_id: u64) -> bool {
    if cgroup_id == 0 {
        return true;
    }
    let last = LAST_CGROUP.get_ptr_mut(0);
    if let Some(last) = last {
        // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
        if unsafe { *last } == cgroup_id {
            return true;
        }
    }
    let filtering: u8 = config!(filter_workloads);
    let verdict = match CGROUPS.get_ptr(cgroup_id) {
        // SAFETY: a map value pointer, valid while this program runs; one byte copied out.
        Some(v) => unsafe { *v },
        None => {
            announce(cgroup_id);
            return true;
        }
    };
    if verdict == CGROUP_UNWANTED {
        return false;
    }
    // Remembered only once its verdict is final: a cgroup still to be judged by the filters is
    // looked up again (userspace filters its records meanwhile).
    if (filtering == 0 || verdict == CGROUP_WANTED)
        && let Some(last) = last
    {
        // SAFETY: as above.
        unsafe { *last = cgroup_id };
    }
    true
}

/// Submits the names on the calling task's cgroup v2 path, and remembers the cgroup as
/// announced. When the ring buffer is full nothing is remembered: the next connect tries again.
#[inline(always)]
fn announce(cgroup_id: u64) {
    let Some(mut entry) = EVENTS.reserve::<RawCgroup>(0) else {
        count(Counter::Lost);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points at a reserved ring-buffer slot of size_of::<RawCgroup>() bytes that
    // only this program writes until it is submitted; header fields are written in place and
    // the names by bpf_probe_read_kernel_str, which bounds every write by the size given.
    unsafe {
        (*rec).kind = KIND_CGROUP;
        (*rec).truncated = 0;
        (*rec).cut = 0;
        (*rec)._pad = [0; 4];
        (*rec).cgroup_id = cgroup_id;
        (*rec).levels = read_path(&mut (*rec).names, &mut (*rec).truncated, &mut (*rec).cut);
    }
    entry.submit(wakeup_flag(core::mem::size_of::<RawCgroup>()));
    count(Counter::Produced);
    let seen = tracer_common::CGROUP_SEEN;
    // BPF_NOEXIST: a verdict userspace already wrote stays.
    let _ = CGROUPS.insert(cgroup_id, seen, aya_ebpf::bindings::BPF_NOEXIST as u64);
}

/// Reads the names from the task's cgroup up to the level below the root, leaf first; returns
/// how many were read and sets `truncated` when levels above them were left out, and bit `i` of
/// `cut` when name `i` is longer than its slot keeps.
#[inline(always)]
fn read_path(
    names: &mut [[u8; CGROUP_NAME_LEN]; CGROUP_LEVELS],
    truncated: &mut u8,
    cut: &mut u8,
) -> u8 {
    // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mut cset: *const u8 = core::ptr::null();
    let mut cgrp: *const u8 = core::ptr::null();
    let mut kn: *const u8 = core::ptr::null();
    if !(member(task, offset!(members.task_cgroups), &mut cset)
        && member(cset, offset!(members.css_set_dfl_cgrp), &mut cgrp)
        && member(cgrp, offset!(members.cgroup_kn), &mut kn))
    {
        return 0;
    }
    let parent_off: u32 = offset!(members.kernfs_parent);
    let name_off: u32 = offset!(members.kernfs_name);
    let mut levels = 0u8;
    for (i, name) in names.iter_mut().enumerate() {
        let mut parent: *const u8 = core::ptr::null();
        if !member(kn, parent_off, &mut parent) || parent.is_null() {
            // `kn` is the root (its name is not part of the path).
            return levels;
        }
        let mut ptr: *const u8 = core::ptr::null();
        if !member(kn, name_off, &mut ptr) {
            return levels;
        }
        // SAFETY: the destination is one name slot of exactly CGROUP_NAME_LEN bytes; the helper
        // reads kernel memory safely and writes at most that many bytes, NUL included.
        let n = unsafe {
            bpf_probe_read_kernel_str(name.as_mut_ptr().cast(), CGROUP_NAME_LEN as u32, ptr.cast())
        };
        if n <= 0 {
            name[0] = 0;
        } else if n == CGROUP_NAME_LEN as i64 {
            // The slot is full: the name is exactly CGROUP_NAME_LEN - 1 bytes, or longer and
            // cut. The byte after the kept ones tells (NUL: whole); unreadable counts as cut.
            let mut next = 1u8;
            member(ptr, (CGROUP_NAME_LEN - 1) as u32, &mut next);
            if next != 0 {
                *cut |= 1 << i;
            }
        }
        levels += 1;
        kn = parent;
    }
    let mut parent: *const u8 = core::ptr::null();
    if member(kn, parent_off, &mut parent) && !parent.is_null() {
        *truncated = 1;
    }
    levels
}
