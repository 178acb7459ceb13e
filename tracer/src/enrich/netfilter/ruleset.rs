//! A namespace's nftables ruleset as the kernel dumps it (`NFT_MSG_NEW*` answers to `GET*`
//! dumps), parsed from the raw netlink attributes: tables, chains, rules with their expressions,
//! sets and maps with their elements. Pure: bytes in, an immutable [`Ruleset`] out.
//!
//! Every input is hostile: an attribute that does not decode is skipped and counted
//! (`Ruleset::parse_errors`), an expression this module does not know is kept as
//! [`Expr::Unknown`] (which makes its rule uncertain for `eval`), and nothing panics.
use std::collections::HashMap;

/// nfgenmsg families (`NFPROTO_*`).
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// Verdict codes (`NF_*`, `NFT_*`).
pub const NF_DROP: i32 = 0;
pub const NF_ACCEPT: i32 = 1;
pub const NF_QUEUE: i32 = 3;
pub const NFT_CONTINUE: i32 = -1;
pub const NFT_BREAK: i32 = -2;
pub const NFT_JUMP: i32 = -3;
pub const NFT_GOTO: i32 = -4;
pub const NFT_RETURN: i32 = -5;

/// Set flags (`NFT_SET_*`).
pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub const NFT_SET_CONSTANT: u32 = 0x2;
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_MAP: u32 = 0x8;
pub const NFT_SET_TIMEOUT: u32 = 0x10;
pub const NFT_SET_EVAL: u32 = 0x20;
pub const NFT_SET_OBJECT: u32 = 0x40;
pub const NFT_SET_CONCAT: u32 = 0x80;
/// A set element that ends an interval (`NFT_SET_ELEM_INTERVAL_END`).
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// `NFT_DATA_VERDICT`: a map whose values are verdicts (a vmap).
pub const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// The most bytes kept of one data value (`NFT_DATA_VALUE_MAXLEN` is 64).
const MAX_DATA: usize = 64;
/// The most bytes kept of a comment.
const MAX_COMMENT: usize = 256;
/// The most expressions kept per rule (the kernel allows 128 per rule in practice).
const MAX_EXPRS: usize = 256;

/// A verdict: a code, and the chain of a jump or goto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub code: i32,
    pub chain: Option<String>,
}

/// Data of an immediate, a map element's value, or a cmp operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

/// One expression of a rule, as far as `eval` needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// `payload load LEN @ BASE + OFFSET => DREG` (base: 0 link, 1 network, 2 transport, 3 inner).
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `meta load KEY => DREG`.
    Meta { key: u32, dreg: u32 },
    /// `ct load KEY => DREG` (direction ignored).
    Ct { key: u32, dreg: u32 },
    /// `cmp OP SREG DATA` (op: 0 eq, 1 neq, 2 lt, 3 lte, 4 gt, 5 gte).
    Cmp { sreg: u32, op: u32, data: Vec<u8> },
    /// `range OP SREG FROM TO` (op: 0 eq, 1 neq).
    Range {
        sreg: u32,
        op: u32,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// `bitwise DREG = (SREG & MASK) ^ XOR` (only the boolean form).
    Bitwise {
        sreg: u32,
        dreg: u32,
        len: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `lookup SREG set NAME [dreg DREG]`, inverted with `!=`.
    Lookup {
        sreg: u32,
        dreg: Option<u32>,
        set: String,
        invert: bool,
    },
    /// `immediate DREG DATA`: a value, or a verdict when DREG is 0.
    Immediate { dreg: u32, data: Data },
    /// `reject`: the rule rejects.
    Reject,
    /// `nat`, `masq`, `redir`, `tproxy`: the base chain ends accepting (NAT is set up).
    Nat,
    /// `queue`: the packet goes to user space; what happens then is unknown.
    Queue,
    /// Writes a value this module cannot know (`numgen`, `hash`, `fib`, `rt`, `socket`, ...).
    Opaque { dreg: u32, len: u32 },
    /// A statement that neither matches nor ends the rule (`counter`, `log`, `limit`,
    /// `quota`, `notrack`, `dynset`, `meta set`, `ct set`, `payload set`, `objref`, ...).
    NoOp,
    /// An x_tables match (`iptables-nft`): its name, revision and raw info.
    XtMatch {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// An x_tables target (`iptables-nft`): its name, revision and raw info.
    XtTarget {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// Anything else: the rule is uncertain.
    Unknown(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub handle: u64,
    pub exprs: Vec<Expr>,
    /// `NFTA_RULE_USERDATA` TLV 0, or the `comment` match of `iptables-nft`.
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseChain {
    /// `NF_INET_*`: 0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting.
    pub hook: u32,
    pub priority: i32,
    /// `filter`, `nat` or `route`.
    pub kind: String,
    /// `NF_ACCEPT` or `NF_DROP`.
    pub policy: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub handle: u64,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    /// The end of a range (`NFTA_SET_ELEM_KEY_END`, concatenated intervals).
    pub key_end: Option<Vec<u8>>,
    pub flags: u32,
    pub data: Option<Data>,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub flags: u32,
    pub key_type: u32,
    pub key_len: u32,
    /// `NFT_DATA_VERDICT` for a vmap, else the data type of a map's values.
    pub data_type: Option<u32>,
    pub data_len: u32,
    /// The byte length of each field of a concatenated key (`NFTA_SET_DESC_CONCAT`).
    pub fields: Vec<u32>,
    pub elements: Vec<Element>,
    /// False for an anonymous set only looked up with a key no packet fact decides
    /// (`numgen random mod N vmap { … }`, kube-proxy's endpoint choice): its elements are not
    /// dumped (one request each, 10,000 of them for 10,000 Services).
    pub elements_read: bool,
    /// Exact keys → element index (sets without intervals).
    pub(crate) exact: HashMap<Vec<u8>, usize>,
}

impl Set {
    pub fn is_vmap(&self) -> bool {
        self.data_type == Some(NFT_DATA_VERDICT)
    }

    /// The element whose key matches `key` (exact, or the interval it falls in).
    pub fn find(&self, key: &[u8]) -> Option<&Element> {
        if self.flags & NFT_SET_INTERVAL == 0 {
            return self.exact.get(key).map(|&i| &self.elements[i]);
        }
        // Ranges with an explicit end (pipapo, concatenations): field by field, inclusive.
        if let Some(e) = self.elements.iter().find(|e| {
            e.key_end
                .as_ref()
                .is_some_and(|end| in_range(key, &e.key, end, &self.fields))
        }) {
            return Some(e);
        }
        // rbtree intervals: the greatest start ≤ key, unless it is an interval's end.
        self.elements
            .iter()
            .filter(|e| e.key_end.is_none() && e.key.len() == key.len() && e.key.as_slice() <= key)
            .max_by(|a, b| a.key.cmp(&b.key))
            .filter(|e| e.flags & NFT_SET_ELEM_INTERVAL_END == 0)
    }
}

/// Whether `key` lies in [from, to], field by field (each field padded to 4 bytes).
fn in_range(key: &[u8], from: &[u8], to: &[u8], fields: &[u32]) -> bool {
    if key.len() != from.len() || key.len() != to.len() {
        return false;
    }
    let mut off = 0usize;
    let widths: Vec<usize> = if fields.is_empty() {
        vec![key.len()]
    } else {
        fields.iter().map(|&f| f as usize).collect()
    };
    for w in widths {
        let padded = w.next_multiple_of(4).max(w);
        let end = (off + w).min(key.len());
        let (k, a, b) = (&key[off..end], &from[off..end], &to[off..end]);
        if k < a || k > b {
            return false;
        }
        off = (off + padded).min(key.len());
    }
    true
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub family: u8,
    pub name: String,
    pub chains: Vec<Chain>,
    pub sets: Vec<Set>,
    pub(crate) chain_ix: HashMap<String, usize>,
    pub(crate) set_ix: HashMap<String, usize>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chain_ix.get(name).map(|&i| &self.chains[i])
    }
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.set_ix.get(name).map(|&i| &self.sets[i])
    }
}

/// One namespace's ruleset, immutable once built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The ruleset generation it was dumped at (`NFTA_GEN_ID`).
    pub generation: u32,
    pub tables: Vec<Table>,
    /// Attributes or messages that did not decode.
    pub parse_errors: u64,
}

impl Ruleset {
    /// An estimate of the heap bytes it holds (capacities, without the allocator's overhead
    /// or the hash maps' control bytes).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let v = |d: &[u8]| d.len();
        let data = |d: &Data| match d {
            Data::Value(x) => x.capacity(),
            Data::Verdict(x) => x.chain.as_ref().map_or(0, String::capacity),
        };
        let mut n = self.tables.capacity() * size_of::<Table>();
        for t in &self.tables {
            n += t.name.capacity() + t.chains.capacity() * size_of::<Chain>();
            n += t.chain_ix.capacity() * (size_of::<(String, usize)>() + 1);
            n += t.set_ix.capacity() * (size_of::<(String, usize)>() + 1);
            for c in &t.chains {
                n += 2 * c.name.capacity() + c.rules.capacity() * size_of::<Rule>();
                n += c.base.as_ref().map_or(0, |b| b.kind.capacity());
                for r in &c.rules {
                    n += r.exprs.capacity() * size_of::<Expr>();
                    n += r.comment.as_ref().map_or(0, String::capacity);
                    for e in &r.exprs {
                        n += match e {
                            Expr::Cmp { data, .. } => v(data),
                            Expr::Range { from, to, .. } => v(from) + v(to),
                            Expr::Bitwise { mask, xor, .. } => v(mask) + v(xor),
                            Expr::Lookup { set, .. } => set.capacity(),
                            Expr::Immediate { data: d, .. } => data(d),
                            Expr::XtMatch { name, info, .. }
                            | Expr::XtTarget { name, info, .. } => {
                                name.capacity() + info.capacity()
                            }
                            Expr::Unknown(s) => s.capacity(),
                            _ => 0,
                        };
                    }
                }
            }
            n += t.sets.capacity() * size_of::<Set>();
            for s in &t.sets {
                n += s.name.capacity() + s.elements.capacity() * size_of::<Element>();
                n += s.exact.capacity() * (size_of::<(Vec<u8>, usize)>() + 1);
                for e in &s.elements {
                    n += 2 * e.key.capacity() + e.key_end.as_ref().map_or(0, Vec::capacity);
                    n += e.data.as_ref().map_or(0, data);
                    n += e.comment.as_ref().map_or(0, String::capacity);
                }
            }
        }
        n
    }

    pub fn table(&self, family: u8, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.family == family && t.name == name)
    }
}

// ---- raw netlink -------------------------------------------------------------------------

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
/// `NFNL_SUBSYS_NFTABLES << 8`.
pub(crate) const NFT_SUBSYS: u16 = 10 << 8;
pub(crate) const NFT_MSG_NEWTABLE: u8 = 0;
pub(crate) const NFT_MSG_NEWCHAIN: u8 = 3;
pub(crate) const NFT_MSG_NEWRULE: u8 = 6;
pub(crate) const NFT_MSG_NEWSET: u8 = 9;
pub(crate) const NFT_MSG_NEWSETELEM: u8 = 12;
pub(crate) const NFT_MSG_NEWGEN: u8 = 15;

/// The attributes of a netlink attribute stream: (type without flags, payload). Stops at the
/// first malformed header and says so.
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
    pub bad: bool,
}

pub(crate) fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf, bad: false }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < 4 {
            self.bad |= !self.buf.is_empty();
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & 0x3fff;
        if len < 4 || len > self.buf.len() {
            self.bad = true;
            self.buf = &[];
            return None;
        }
        let payload = &self.buf[4..len];
        let next = len.next_multiple_of(4).min(self.buf.len());
        self.buf = &self.buf[next..];
        Some((ty, payload))
    }
}

fn be32(b: &[u8]) -> Option<u32> {
    b.first_chunk::<4>().map(|c| u32::from_be_bytes(*c))
}
fn be64(b: &[u8]) -> Option<u64> {
    b.first_chunk::<8>().map(|c| u64::from_be_bytes(*c))
}
/// A NUL-terminated string attribute, lossily converted and bounded.
pub(crate) fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end.min(MAX_COMMENT)]).into_owned()
}

/// The comment in a `NFTA_*_USERDATA` blob: TLVs of (u8 type, u8 len, value); type 0 is the
/// comment (`NFTNL_UDATA_RULE_COMMENT`, `NFTNL_UDATA_SET_ELEM_COMMENT`).
pub fn userdata_comment(mut b: &[u8]) -> Option<String> {
    while b.len() >= 2 {
        let (ty, len) = (b[0], b[1] as usize);
        let v = b.get(2..2 + len)?;
        if ty == 0 {
            return Some(text(v));
        }
        b = &b[2 + len..];
    }
    None
}

/// A verdict (`NFTA_DATA_VERDICT` contents: `NFTA_VERDICT_CODE`, `NFTA_VERDICT_CHAIN`).
fn verdict(b: &[u8]) -> Option<Verdict> {
    let mut code = None;
    let mut chain = None;
    for (ty, v) in attrs(b) {
        match ty {
            1 => code = be32(v).map(|c| c as i32),
            2 => chain = Some(text(v)),
            _ => {}
        }
    }
    Some(Verdict { code: code?, chain })
}

/// `NFTA_DATA_*`: a value (1) or a verdict (2).
fn data(b: &[u8]) -> Option<Data> {
    for (ty, v) in attrs(b) {
        match ty {
            1 => return Some(Data::Value(v[..v.len().min(MAX_DATA)].to_vec())),
            2 => return verdict(v).map(Data::Verdict),
            _ => {}
        }
    }
    None
}

fn value(b: &[u8]) -> Option<Vec<u8>> {
    match data(b)? {
        Data::Value(v) => Some(v),
        Data::Verdict(_) => None,
    }
}

/// One `NFTA_LIST_ELEM` of `NFTA_RULE_EXPRESSIONS`.
fn expr(b: &[u8]) -> Option<Expr> {
    let mut name = None;
    let mut body: &[u8] = &[];
    for (ty, v) in attrs(b) {
        match ty {
            1 => name = Some(text(v)),
            2 => body = v,
            _ => {}
        }
    }
    let name = name?;
    let mut a: [Option<&[u8]>; 16] = [None; 16];
    for (ty, v) in attrs(body) {
        if let Some(slot) = a.get_mut(ty as usize) {
            *slot = Some(v);
        }
    }
    let u = |i: usize| a[i].and_then(be32);
    Some(match name.as_str() {
        "payload" => match u(5) {
            // NFTA_PAYLOAD_SREG: a payload write (`payload set`) is a statement.
            Some(_) => Expr::NoOp,
            None => Expr::Payload {
                dreg: u(1)?,
                base: u(2)?,
                offset: u(3)?,
                len: u(4)?,
            },
        },
        "meta" => match (u(2), u(1)) {
            (Some(key), Some(dreg)) => Expr::Meta { key, dreg },
            (Some(_), None) => Expr::NoOp, // meta set
            _ => return None,
        },
        "ct" => match (u(2), u(1)) {
            (Some(key), Some(dreg)) => Expr::Ct { key, dreg },
            (Some(_), None) => Expr::NoOp, // ct set
            _ => return None,
        },
        "cmp" => Expr::Cmp {
            sreg: u(1)?,
            op: u(2)?,
            data: value(a[3]?)?,
        },
        "range" => Expr::Range {
            sreg: u(1)?,
            op: u(2)?,
            from: value(a[3]?)?,
            to: value(a[4]?)?,
        },
        "bitwise" => {
            // NFTA_BITWISE_OP (6): 0 bool; shifts are not evaluated.
            if u(6).is_some_and(|op| op != 0) {
                return Some(Expr::Unknown("bitwise shift".into()));
            }
            Expr::Bitwise {
                sreg: u(1)?,
                dreg: u(2)?,
                len: u(3)?,
                mask: value(a[4]?)?,
                xor: value(a[5]?)?,
            }
        }
        "lookup" => Expr::Lookup {
            set: text(a[1]?),
            sreg: u(2)?,
            dreg: u(3),
            invert: u(5).is_some_and(|f| f & 1 != 0),
        },
        "immediate" => Expr::Immediate {
            dreg: u(1)?,
            data: data(a[2]?)?,
        },
        "reject" => Expr::Reject,
        "nat" | "masq" | "redir" | "tproxy" => Expr::Nat,
        "queue" => Expr::Queue,
        "numgen" => Expr::Opaque {
            dreg: u(1)?,
            len: 4,
        },
        "hash" | "socket" | "osf" => Expr::Opaque {
            dreg: u(2).or(u(1))?,
            len: u(4).filter(|_| name == "hash").map_or(16, |_| 4),
        },
        "fib" | "rt" | "exthdr" | "tunnel" | "xfrm" => match u(1) {
            Some(dreg) => Expr::Opaque { dreg, len: 16 },
            None => Expr::NoOp, // an exthdr write
        },
        "counter" | "log" | "limit" | "quota" | "notrack" | "dynset" | "objref" | "dup"
        | "flow_offload" | "last" | "connlimit_none" => Expr::NoOp,
        "match" | "target" => {
            let x_name = a[1].map(text).unwrap_or_default();
            let rev = u(2).unwrap_or(0);
            let info = a[3]
                .map(|v| v[..v.len().min(4096)].to_vec())
                .unwrap_or_default();
            if name == "match" {
                Expr::XtMatch {
                    name: x_name,
                    rev,
                    info,
                }
            } else {
                Expr::XtTarget {
                    name: x_name,
                    rev,
                    info,
                }
            }
        }
        other => Expr::Unknown(other.to_string()),
    })
}

/// The comment of an `iptables-nft` rule: the info of its `comment` match (`char[256]`).
fn xt_comment(exprs: &[Expr]) -> Option<String> {
    exprs.iter().find_map(|e| match e {
        Expr::XtMatch { name, info, .. } if name == "comment" => Some(text(info)),
        _ => None,
    })
}

/// Builds a [`Ruleset`] from the payloads (after the netlink header) of a dump's messages.
#[derive(Default)]
pub struct Builder {
    rs: Ruleset,
    tables: HashMap<(u8, String), usize>,
    /// Sets some rule looks up with a key written by an opaque expression (numgen, hash).
    opaque_keyed: std::collections::HashSet<(u8, String, String)>,
}

impl Builder {
    pub fn new(generation: u32) -> Self {
        Self {
            rs: Ruleset {
                generation,
                ..Default::default()
            },
            tables: HashMap::new(),
            opaque_keyed: Default::default(),
        }
    }

    /// Every set dumped so far: (family, table, set), for the element dumps.
    pub fn sets(&self) -> Vec<(u8, String, String)> {
        self.rs
            .tables
            .iter()
            .flat_map(|t| {
                t.sets
                    .iter()
                    .filter(|s| s.elements_read)
                    .map(|s| (t.family, t.name.clone(), s.name.clone()))
            })
            .collect()
    }

    pub fn error(&mut self) {
        self.rs.parse_errors += 1;
    }

    fn table_mut(&mut self, family: u8, name: &str) -> Option<&mut Table> {
        let &i = self.tables.get(&(family, name.to_string()))?;
        self.rs.tables.get_mut(i)
    }

    /// One message: its type within the nftables subsystem, and its payload (nfgenmsg + attrs).
    pub fn message(&mut self, msg_type: u8, payload: &[u8]) {
        let Some((family, rest)) = payload.split_first_chunk::<4>().map(|(h, r)| (h[0], r)) else {
            return self.error();
        };
        let mut it = attrs(rest);
        let list: Vec<(u16, &[u8])> = it.by_ref().collect();
        if it.bad {
            self.error();
        }
        let get = |t: u16| list.iter().find(|(ty, _)| *ty == t).map(|(_, v)| *v);
        let ok = match msg_type {
            NFT_MSG_NEWTABLE => self.on_table(family, &get),
            NFT_MSG_NEWCHAIN => self.on_chain(family, &get),
            NFT_MSG_NEWRULE => self.on_rule(family, &get),
            NFT_MSG_NEWSET => self.on_set(family, &get),
            NFT_MSG_NEWSETELEM => self.on_elements(family, &get),
            _ => Some(()),
        };
        if ok.is_none() {
            self.error();
        }
    }

    fn on_table<'b>(&mut self, family: u8, get: &dyn Fn(u16) -> Option<&'b [u8]>) -> Option<()> {
        let name = text(get(1)?);
        let key = (family, name.clone());
        if self.tables.contains_key(&key) {
            return Some(());
        }
        self.tables.insert(key, self.rs.tables.len());
        self.rs.tables.push(Table {
            family,
            name,
            ..Default::default()
        });
        Some(())
    }

    fn on_chain<'b>(&mut self, family: u8, get: &dyn Fn(u16) -> Option<&'b [u8]>) -> Option<()> {
        let table = text(get(1)?);
        let name = text(get(3)?);
        let handle = get(2).and_then(be64).unwrap_or(0);
        let base = match get(4) {
            Some(hook) => {
                let mut num = None;
                let mut prio = None;
                for (ty, v) in attrs(hook) {
                    match ty {
                        1 => num = be32(v),
                        2 => prio = be32(v).map(|p| p as i32),
                        _ => {}
                    }
                }
                Some(BaseChain {
                    hook: num?,
                    priority: prio.unwrap_or(0),
                    kind: get(7).map(text).unwrap_or_else(|| "filter".into()),
                    policy: get(5).and_then(be32).map_or(NF_ACCEPT, |p| p as i32),
                })
            }
            None => None,
        };
        let t = self.table_mut(family, &table)?;
        if t.chain_ix.contains_key(&name) {
            return Some(());
        }
        t.chain_ix.insert(name.clone(), t.chains.len());
        t.chains.push(Chain {
            name,
            handle,
            base,
            rules: Vec::new(),
        });
        Some(())
    }

    fn on_rule<'b>(&mut self, family: u8, get: &dyn Fn(u16) -> Option<&'b [u8]>) -> Option<()> {
        let table = text(get(1)?);
        let chain = text(get(2)?);
        let handle = get(3).and_then(be64)?;
        let mut exprs = Vec::new();
        let mut bad = false;
        if let Some(list) = get(4) {
            let mut it = attrs(list);
            for (ty, e) in it.by_ref() {
                if ty != 1 || exprs.len() >= MAX_EXPRS {
                    bad = true;
                    continue;
                }
                match expr(e) {
                    Some(x) => exprs.push(x),
                    None => {
                        bad = true;
                        exprs.push(Expr::Unknown("undecodable".into()));
                    }
                }
            }
            bad |= it.bad;
        }
        if bad {
            self.error();
        }
        let comment = get(7)
            .and_then(userdata_comment)
            .or_else(|| xt_comment(&exprs));
        // A lookup whose key register was last written by an opaque expression.
        let mut opaque_regs: Vec<u32> = Vec::new();
        for e in &exprs {
            match e {
                Expr::Opaque { dreg, .. } => opaque_regs.push(*dreg),
                Expr::Lookup { sreg, set, .. } if opaque_regs.contains(sreg) => {
                    self.opaque_keyed
                        .insert((family, table.clone(), set.clone()));
                }
                Expr::Payload { dreg, .. }
                | Expr::Meta { dreg, .. }
                | Expr::Ct { dreg, .. }
                | Expr::Bitwise { dreg, .. }
                | Expr::Immediate { dreg, .. } => opaque_regs.retain(|r| r != dreg),
                _ => {}
            }
        }
        let t = self.table_mut(family, &table)?;
        let &ci = t.chain_ix.get(&chain)?;
        t.chains[ci].rules.push(Rule {
            handle,
            exprs,
            comment,
        });
        Some(())
    }

    fn on_set<'b>(&mut self, family: u8, get: &dyn Fn(u16) -> Option<&'b [u8]>) -> Option<()> {
        let table = text(get(1)?);
        let name = text(get(2)?);
        let mut fields = Vec::new();
        if let Some(desc) = get(9) {
            for (ty, v) in attrs(desc) {
                // NFTA_SET_DESC_CONCAT (2): NFTA_LIST_ELEM of NFTA_SET_FIELD_LEN (1).
                if ty == 2 {
                    for (_, f) in attrs(v) {
                        fields.extend(
                            attrs(f)
                                .filter(|(t, _)| *t == 1)
                                .filter_map(|(_, l)| be32(l)),
                        );
                    }
                }
            }
        }
        let flags = get(3).and_then(be32).unwrap_or(0);
        let opaque = flags & NFT_SET_ANONYMOUS != 0
            && self
                .opaque_keyed
                .contains(&(family, table.clone(), name.clone()));
        let set = Set {
            name: name.clone(),
            elements_read: !opaque,
            flags,
            key_type: get(4).and_then(be32).unwrap_or(0),
            key_len: get(5).and_then(be32).unwrap_or(0),
            data_type: get(6).and_then(be32),
            data_len: get(7).and_then(be32).unwrap_or(0),
            fields,
            ..Default::default()
        };
        let t = self.table_mut(family, &table)?;
        if t.set_ix.contains_key(&name) {
            return Some(());
        }
        t.set_ix.insert(name, t.sets.len());
        t.sets.push(set);
        Some(())
    }

    fn on_elements<'b>(&mut self, family: u8, get: &dyn Fn(u16) -> Option<&'b [u8]>) -> Option<()> {
        let table = text(get(1)?);
        let set = text(get(2)?);
        let list = get(3)?;
        let mut errors = 0u64;
        let mut elements = Vec::new();
        let mut it = attrs(list);
        for (_, e) in it.by_ref() {
            let mut key = None;
            let mut key_end = None;
            let mut flags = 0;
            let mut d = None;
            let mut comment = None;
            for (ty, v) in attrs(e) {
                match ty {
                    1 => key = value(v),
                    2 => d = data(v),
                    3 => flags = be32(v).unwrap_or(0),
                    6 => comment = userdata_comment(v),
                    10 => key_end = value(v), // after PAD (8) and OBJREF (9)
                    _ => {}
                }
            }
            match key {
                Some(key) => elements.push(Element {
                    key,
                    key_end,
                    flags,
                    data: d,
                    comment,
                }),
                None => errors += 1,
            }
        }
        errors += u64::from(it.bad);
        self.rs.parse_errors += errors;
        let t = self.table_mut(family, &table)?;
        let &si = t.set_ix.get(&set)?;
        let s = &mut t.sets[si];
        for e in elements {
            if s.flags & NFT_SET_INTERVAL == 0 {
                s.exact.insert(e.key.clone(), s.elements.len());
            }
            s.elements.push(e);
        }
        Some(())
    }

    pub fn finish(mut self) -> Ruleset {
        // Growth slack is a third of a large ruleset's memory.
        for t in &mut self.rs.tables {
            for c in &mut t.chains {
                for r in &mut c.rules {
                    r.exprs.shrink_to_fit();
                }
                c.rules.shrink_to_fit();
            }
            for s in &mut t.sets {
                s.elements.shrink_to_fit();
            }
            t.chains.shrink_to_fit();
        }
        self.rs
    }
}

/// Parses a whole dump: a concatenation of netlink messages (as read from the socket).
pub fn parse_messages(generation: u32, bytes: &[u8]) -> Ruleset {
    let mut b = Builder::new(generation);
    feed(&mut b, bytes);
    b.finish()
}

/// Feeds every nftables message in `bytes` (netlink messages back to back) to `b`; returns
/// whether an `NLMSG_DONE` was seen and the errno of an `NLMSG_ERROR` if any.
pub(crate) fn feed(b: &mut Builder, mut bytes: &[u8]) -> (bool, i32) {
    let mut done = false;
    let mut err = 0;
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let ty = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if len < 16 || len > bytes.len() {
            b.error();
            break;
        }
        let payload = &bytes[16..len];
        match ty {
            NLMSG_DONE => done = true,
            NLMSG_ERROR => {
                let e = payload
                    .first_chunk::<4>()
                    .map(|c| i32::from_ne_bytes(*c))
                    .unwrap_or(0);
                if e != 0 {
                    err = e.saturating_neg();
                }
            }
            t if t & 0xff00 == NFT_SUBSYS => b.message((t & 0xff) as u8, payload),
            _ => {}
        }
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    (done, err)
}
