//! The request and response stages of a route besides authentication and
//! rate limits ([`crate::auth`], [`crate::ratelimit`]): each is compiled
//! once per config version into plain data ([`Stages::compile`]) and run by
//! the pipeline ([`crate::proxy`]) in the order ARCHITECTURE draws. A route
//! without a stage holds `None` for it (a null pointer: stages are boxed,
//! as most routes have none) and pays nothing more.

pub mod body;
pub mod cache;
pub mod cors;
pub mod ip;
pub mod profile;
pub mod transform;
pub mod values;

use std::sync::Arc;

use portico_shared::model::Policy;

use self::cache::CacheStage;
use self::cors::Cors;
use self::ip::IpRule;
use self::profile::Profiles;
use self::transform::{RequestShaper, ResponseShaper};

/// The compiled stages of one route.
#[derive(Debug, Default)]
pub struct Stages {
    pub cors: Option<Box<Cors>>,
    pub ip: Option<Box<IpRule>>,
    /// `request-transform` profiles.
    pub request: Profiles<RequestShaper>,
    /// `response-transform` profiles.
    pub response: Profiles<ResponseShaper>,
    pub cache: Option<Box<CacheStage>>,
    /// Which requests get an access log line ([`crate::access_log`]).
    pub access_log: crate::access_log::Plan,
}

impl Stages {
    /// Compiles the stages of route `route` from the policies that apply
    /// to it ([`portico_shared::model::effective_policies`]).
    pub fn compile(route: &Arc<str>, policies: &[&Policy]) -> Result<Self, String> {
        let mut stages = Self { access_log: crate::access_log::Plan::compile(policies), ..Self::default() };
        for policy in policies {
            match policy {
                Policy::Cors(p) => stages.cors = Some(Box::new(Cors::compile(p))),
                Policy::IpRestriction(p) => stages.ip = Some(Box::new(IpRule::compile(p)?)),
                _ => {}
            }
        }
        let requests = policies.iter().filter_map(|p| match p {
            Policy::RequestTransform(t) => Some((t.when.as_ref(), t)),
            _ => None,
        });
        stages.request = Profiles::compile(requests, RequestShaper::compile)?;
        let responses = policies.iter().filter_map(|p| match p {
            Policy::ResponseTransform(t) => Some((t.when.as_ref(), t)),
            _ => None,
        });
        stages.response = Profiles::compile(responses, ResponseShaper::compile)?;
        if let Some(policy) = policies.iter().find_map(|p| match p {
            Policy::Cache(policy) => Some(policy),
            _ => None,
        }) {
            stages.cache = Some(Box::new(CacheStage::compile(route, policy)?));
        }
        Ok(stages)
    }
}
