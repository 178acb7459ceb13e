//! The `Rulesets` the pipeline asks: the netfilter reader's published rulesets (`enrich::netfilter`),
//! each question answered from memory.
use std::{net::SocketAddr, sync::Arc};

use super::{Rulesets, Syn};
use crate::{
    analysis::outcome::{Hook, RuleSeen, Service, ServiceState},
    enrich::netfilter::{self, Action, Netfilter, Packet},
};

fn state(s: netfilter::ServiceState) -> ServiceState {
    match s {
        netfilter::ServiceState::HasEndpoints => ServiceState::HasEndpoints,
        netfilter::ServiceState::NoEndpoints => ServiceState::NoEndpoints,
        netfilter::ServiceState::NoLocalEndpoints => ServiceState::NoLocalEndpoints,
    }
}

impl Rulesets for Netfilter {
    fn service(&self, netns: u32, addr: SocketAddr) -> Option<Service> {
        let rules = self.rules(netns)?;
        let hit = rules.services.service(addr.ip(), addr.port())?;
        Some(Service {
            name: Some(Arc::from(hit.name.as_str())),
            state: state(hit.state),
            source: hit.source,
            programs: Vec::new(),
        })
    }

    fn service_of_backend(&self, netns: u32, addr: SocketAddr) -> Option<Service> {
        let rules = self.rules(netns)?;
        let name = rules.services.service_of_backend(addr.ip(), addr.port())?;
        Some(Service {
            name: Some(Arc::from(name)),
            state: ServiceState::HasEndpoints,
            source: if rules.ruleset.tables.iter().any(|t| t.name == "kube-proxy") {
                netfilter::kube::SOURCE_NFTABLES
            } else {
                netfilter::kube::SOURCE_IPTABLES
            },
            programs: Vec::new(),
        })
    }

    fn dropping_rule(&self, netns: u32, h: Hook, syn: &Syn) -> Option<RuleSeen> {
        let rules = self.rules(netns)?;
        let packet = Packet {
            saddr: syn.src.ip(),
            daddr: syn.dst.ip(),
            sport: syn.src.port(),
            dport: syn.dst.port(),
            translated_daddr: syn.translated_dst.map(|d| d.ip()),
            translated_dport: syn.translated_dst.map(|d| d.port()),
            uid: syn.uid,
        };
        let hit = netfilter::dropping_rule(&rules.ruleset, h, &packet)?;
        Some(RuleSeen {
            family: hit.family,
            table: Arc::from(hit.table.as_str()),
            chain: Arc::from(hit.chain.as_str()),
            handle: hit.handle,
            comment: hit.comment.as_deref().map(Arc::from),
            verdict: match hit.verdict {
                Action::Drop => "drop",
                Action::Reject => "reject",
            },
            certain: hit.certain,
        })
    }
}
