//! Names for numbers the kernel hands over: errnos, task names, TCP flags, and the kernel's
//! RST and drop reasons (from its BTF).
use std::{borrow::Cow, sync::OnceLock};

use crate::kernel::btf::KernelBtf;

/// The symbolic name of an errno (`ECONNREFUSED`), or its number.
pub fn errno_name(errno: i32) -> Cow<'static, str> {
    /// Names of errnos 0..256, built once.
    static NAMES: OnceLock<Vec<Option<String>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..256)
            .map(|n| {
                let e = nix::errno::Errno::from_raw(n);
                (e != nix::errno::Errno::UnknownErrno).then(|| format!("{e:?}"))
            })
            .collect()
    });
    match usize::try_from(errno)
        .ok()
        .and_then(|i| names.get(i))
        .and_then(Option::as_deref)
    {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(errno.to_string()),
    }
}

/// The task name up to its NUL; invalid UTF-8 replaced (serde_json escapes control bytes).
pub fn comm(raw: &[u8; 16]) -> Cow<'_, str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end])
}

/// TCP flags as letters in tcpdump's order: `S`, `SA`, `R`, `F`, `P`, `.` for a bare ACK.
pub fn tcp_flags(flags: u8) -> String {
    let names = [
        (0x01, 'F'),
        (0x02, 'S'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
    ];
    let mut s: String = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|&(_, c)| c)
        .collect();
    if flags & 0x10 != 0 {
        s.push(if s.is_empty() { '.' } else { 'A' });
    }
    s
}

/// Names of the kernel's reason codes, from its BTF: `enum sk_rst_reason` (`SK_RST_REASON_`
/// stripped, lower case) and `enum skb_drop_reason` (`SKB_DROP_REASON_` stripped, as the
/// kernel's own tracepoint prints them); empty when unknown, and then the number is printed.
#[derive(Clone, Debug, Default)]
pub struct ReasonNames {
    pub rst: Vec<(u64, String)>,
    pub drop: Vec<(u64, String)>,
}

impl ReasonNames {
    /// The names this kernel's BTF gives.
    pub fn from_btf(btf: &KernelBtf) -> Self {
        Self {
            rst: btf
                .enum_variants("sk_rst_reason")
                .into_iter()
                .map(|(v, n)| (v, n.trim_start_matches("SK_RST_REASON_").to_lowercase()))
                .collect(),
            drop: btf
                .enum_variants("skb_drop_reason")
                .into_iter()
                .map(|(v, n)| (v, n.trim_start_matches("SKB_DROP_REASON_").to_string()))
                .collect(),
        }
    }

    /// The name of a RST reason.
    pub fn rst(&self, value: u16) -> Cow<'_, str> {
        Self::find(&self.rst, value)
    }

    /// The name of a drop reason.
    pub fn drop(&self, value: u16) -> Cow<'_, str> {
        Self::find(&self.drop, value)
    }

    fn find(names: &[(u64, String)], value: u16) -> Cow<'_, str> {
        names
            .iter()
            .find(|(v, _)| *v == u64::from(value))
            .map(|(_, n)| Cow::Borrowed(n.as_str()))
            .unwrap_or_else(|| Cow::Owned(value.to_string()))
    }
}
