//! Naming SIDs: which proxy locator a SID belongs to, and the function and argument its bits select
//! (RFC 8986 LOC:FUNCT:ARG, the layout srv6pipes-proxy uses).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;

use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::sid::SidLayout;

/// The function numbers srv6pipes-proxy has built in, named before any proxy is asked.
pub const BUILTIN: [(u64, &str); 2] = [(1, "copy"), (2, "xor")];

/// What is known about proxy SIDs: locators, the bit layout, and function names.
#[derive(Debug, Clone)]
pub struct Functions {
    layout: SidLayout,
    locators: Vec<Ipv6Prefix>,
    names: BTreeMap<u64, String>,
}

/// A SID decoded as a function call on a known locator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The locator (the proxy).
    pub locator: Ipv6Prefix,
    /// The function number.
    pub function: u64,
    /// The function's name, if known.
    pub name: Option<String>,
    /// The argument bits.
    pub argument: u64,
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n}({:#x})", self.argument),
            None => write!(f, "f{}({:#x})", self.function, self.argument),
        }
    }
}

impl Functions {
    /// Locators and layout as given; the built-in function names plus `names`.
    pub fn new(layout: SidLayout, locators: Vec<Ipv6Prefix>, names: impl IntoIterator<Item = (u64, String)>) -> Self {
        let mut all: BTreeMap<u64, String> = BUILTIN.iter().map(|(id, n)| (*id, n.to_string())).collect();
        all.extend(names);
        Functions { layout, locators, names: all }
    }

    /// Learn a locator (from a proxy), if it is not known yet.
    pub fn add_locator(&mut self, locator: Ipv6Prefix) {
        if !self.locators.contains(&locator) {
            self.locators.push(locator);
        }
    }

    /// Learn a function's name (from a proxy's loaded modules).
    pub fn name_function(&mut self, id: u64, name: &str) {
        self.names.insert(id, name.to_string());
    }

    /// The SID layout.
    pub fn layout(&self) -> &SidLayout {
        &self.layout
    }

    /// `sid` as a function call, if it lies in a known locator.
    pub fn call(&self, sid: Ipv6Addr) -> Option<Call> {
        let locator = *self.locators.iter().find(|l| l.contains(sid))?;
        let split = self.layout.split(sid);
        Some(Call {
            locator,
            function: split.function,
            name: self.names.get(&split.function).cloned(),
            argument: split.argument,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_in_known_locators_are_named() {
        let f = Functions::new(SidLayout::default(), vec!["fc00:f1::/80".parse().unwrap()], [(7, "hex".to_string())]);
        let call = f.call("fc00:f1::2:0:5a".parse().unwrap()).unwrap();
        assert_eq!((call.function, call.argument, call.to_string()), (2, 0x5a, "xor(0x5a)".to_string()));
        assert_eq!(f.call("fc00:f1::7:0:1".parse().unwrap()).unwrap().to_string(), "hex(0x1)");
        assert_eq!(f.call("fc00:f1::9:0:1".parse().unwrap()).unwrap().to_string(), "f9(0x1)");
        assert_eq!(f.call("fc00:f2::2:0:5a".parse().unwrap()), None);
    }
}
