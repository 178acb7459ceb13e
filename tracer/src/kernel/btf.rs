//! Kernel struct member offsets and enum values from the running kernel's BTF, so one eBPF object
//! reads the right bytes on every kernel without CO-RE (ARCHITECTURE.md §3).
use btf_rs::{Btf, BtfType, Type};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A resolved member: byte offset from the outer struct, and the size of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: usize,
}

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open(path: &str) -> Result<Self, String> {
        Btf::from_file(path)
            .map(|btf| Self { btf })
            .map_err(|e| format!("cannot read BTF from {path}: {e}"))
    }

    /// Resolves `path` (e.g. `["__sk_common", "skc_net", "net"]`) inside `struct strukt`,
    /// descending through anonymous members, typedefs and qualifiers. Bitfields are refused.
    pub fn member(&self, strukt: &str, path: &[&str]) -> Result<Member, String> {
        let mut current = self.struct_named(strukt)?;
        let mut offset = 0u32;
        let mut size = current_size(&current);
        let mut walked = strukt.to_string();
        for name in path {
            walked.push('.');
            walked.push_str(name);
            let (Type::Struct(s) | Type::Union(s)) = &current else {
                return Err(format!("{walked}: parent is not a struct or union"));
            };
            let (bits, ty) = self
                .find_member(s, name)?
                .ok_or_else(|| format!("{walked}: no such member in this kernel's BTF"))?;
            if bits % 8 != 0 {
                return Err(format!("{walked}: is a bitfield"));
            }
            offset += bits / 8;
            current = ty;
            size = self.size_of(&current)?;
        }
        Ok(Member { offset, size })
    }

    /// The value of `variant` in `enum name`.
    pub fn enum_value(&self, name: &str, variant: &str) -> Result<u64, String> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|e| format!("enum {name}: {e}"))?;
        for t in types {
            if let Type::Enum(e) = &t {
                for m in &e.members {
                    if self.btf.resolve_name(m).ok().as_deref() == Some(variant) {
                        return Ok(m.val() as u64);
                    }
                }
            }
            if let Type::Enum64(e) = &t {
                for m in &e.members {
                    if self.btf.resolve_name(m).ok().as_deref() == Some(variant) {
                        return Ok(m.val());
                    }
                }
            }
        }
        Err(format!(
            "enum {name}: no variant {variant} in this kernel's BTF"
        ))
    }

    /// Every variant of `enum name`, as (value, name).
    pub fn enum_variants(&self, name: &str) -> Vec<(u64, String)> {
        let Ok(types) = self.btf.resolve_types_by_name(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in types {
            if let Type::Enum(e) = &t {
                for m in &e.members {
                    if let Ok(n) = self.btf.resolve_name(m) {
                        out.push((u64::from(m.val()), n));
                    }
                }
            }
        }
        out
    }

    /// The parameters of tracepoint `name`'s prototype after its context pointer, from the
    /// typedef `btf_trace_<name>` the kernel declares for raw tracepoint programs: "struct sock
    /// *", "int" (4-byte integers), "enum NAME", qualifiers dropped; anything else by its BTF
    /// kind.
    pub fn tracepoint_params(&self, name: &str) -> Result<Vec<String>, String> {
        let typedef = format!("btf_trace_{name}");
        let t = self
            .btf
            .resolve_types_by_name(&typedef)
            .map_err(|e| format!("{typedef}: {e}"))?
            .into_iter()
            .find(|t| matches!(t, Type::Typedef(_)))
            .ok_or_else(|| format!("{typedef}: not in this kernel's BTF"))?;
        let Type::Ptr(ptr) = self.strip(t)? else {
            return Err(format!("{typedef}: not a function pointer"));
        };
        let Type::FuncProto(proto) = self.strip(self.chained(&ptr)?)? else {
            return Err(format!("{typedef}: not a function pointer"));
        };
        proto
            .parameters
            .iter()
            .skip(1)
            .map(|p| self.describe(self.strip(self.chained(p)?)?))
            .collect()
    }

    /// "struct NAME *", "int" (a 4-byte integer), "enum NAME", or the type's BTF kind.
    fn describe(&self, t: Type) -> Result<String, String> {
        Ok(match &t {
            Type::Int(i) if i.size() == 4 => "int".to_string(),
            Type::Ptr(p) => match self.strip(self.chained(p)?)? {
                Type::Struct(s) => format!(
                    "struct {} *",
                    self.btf.resolve_name(&s).map_err(|e| e.to_string())?
                ),
                other => format!("{} *", other.name()),
            },
            Type::Enum(e) => format!(
                "enum {}",
                self.btf.resolve_name(e).map_err(|e| e.to_string())?
            ),
            other => other.name().to_string(),
        })
    }

    fn struct_named(&self, name: &str) -> Result<Type, String> {
        self.btf
            .resolve_types_by_name(name)
            .map_err(|e| format!("struct {name}: {e}"))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| format!("struct {name}: not in this kernel's BTF"))
    }

    /// Finds a named member, looking inside anonymous struct/union members; returns its bit
    /// offset from `s` and its (qualifier-stripped) type.
    fn find_member(&self, s: &btf_rs::Struct, name: &str) -> Result<Option<(u32, Type)>, String> {
        for m in &s.members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            if m.bitfield_size().is_some_and(|b| b != 0) && mname == name {
                return Err(format!("{name}: is a bitfield"));
            }
            let ty = self.strip(
                self.btf
                    .resolve_chained_type(m)
                    .map_err(|e| e.to_string())?,
            )?;
            if mname == name {
                return Ok(Some((m.bit_offset(), ty)));
            }
            if mname.is_empty()
                && let Type::Struct(inner) | Type::Union(inner) = &ty
                && let Some((bits, t)) = self.find_member(inner, name)?
            {
                return Ok(Some((m.bit_offset() + bits, t)));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut t: Type) -> Result<Type, String> {
        for _ in 0..16 {
            match &t {
                Type::Typedef(x) => t = self.chained(x)?,
                Type::Volatile(x) | Type::Const(x) | Type::Restrict(x) => t = self.chained(x)?,
                Type::TypeTag(x) => t = self.chained(x)?,
                _ => return Ok(t),
            }
        }
        Err("type chain too deep".into())
    }

    fn chained(&self, t: &dyn BtfType) -> Result<Type, String> {
        self.btf.resolve_chained_type(t).map_err(|e| e.to_string())
    }

    fn size_of(&self, t: &Type) -> Result<usize, String> {
        Ok(match t {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => 8,
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Array(a) => a.len() * self.size_of(&self.strip(self.chained(a)?)?)?,
            other => return Err(format!("unexpected member type {}", other.name())),
        })
    }
}

fn current_size(t: &Type) -> usize {
    match t {
        Type::Struct(s) | Type::Union(s) => s.size(),
        _ => 0,
    }
}
