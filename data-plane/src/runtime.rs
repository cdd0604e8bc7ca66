//! The runtime: one config version compiled for serving (route table,
//! upstreams, brokers, per-route settings). It is immutable; a new version builds a
//! new runtime off the request path and swaps it in whole, and requests
//! keep the runtime they started with.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method};
use portico_shared::Snapshot;
use portico_shared::model::{AggregateCall, Policy, Proto, Retries, RouteBackend, effective_policies};
use prost_reflect::DescriptorPool;
use uuid::Uuid;

use crate::auth::{AuthPlan, AuthSettings, Authenticator};
use crate::backend::Backend;
use crate::backend::aggregate::Aggregation;
use crate::backend::amqp::route::broker_settings;
use crate::backend::amqp::{AmqpRoute, Broker};
use crate::backend::grpc::route::Transcoding;
use crate::backend::proxy::Target;
use crate::backend::retry::RetryPlan;
use crate::metrics::RouteMetrics;
use crate::ratelimit::{LimitSettings, Limiter};
use crate::router::{Match, RouteSpec, Router};
use crate::stage::Stages;
use crate::stage::cache::CacheStage;
use crate::tls::Certificates;
use crate::upstream::Upstream;

/// What compiling a config needs from the node.
#[derive(Debug, Clone)]
pub struct Context {
    pub auth: AuthSettings,
    pub limits: LimitSettings,
}

/// Largest request body when no `request-size-limit` policy applies.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// A route, ready to serve.
#[derive(Debug)]
pub struct RouteEntry {
    /// Its place in [`Runtime::route_at`].
    pub index: usize,
    pub id: Option<Uuid>,
    pub name: Arc<str>,
    pub metrics: RouteMetrics,
    pub backend: Backend,
    pub strip_path: bool,
    pub preserve_host: bool,
    /// Plain-HTTP requests are redirected to HTTPS.
    pub https_only: bool,
    /// From the strictest `request-size-limit` on the route, its service or the gateway.
    pub max_body_bytes: u64,
    /// Who may call the route.
    pub auth: AuthPlan,
    /// The rate limits that apply (route's, service's and gateway's) whose
    /// key does not need the caller: checked before authentication.
    pub limits_before_auth: Box<[Arc<Limiter>]>,
    /// Those keyed by consumer or claim: checked after authentication.
    pub limits_after_auth: Box<[Arc<Limiter>]>,
    /// CORS, ip-restriction and transforms.
    pub stages: Stages,
}

/// One compiled config version.
#[derive(Debug)]
pub struct Runtime {
    pub gateway: String,
    pub version: u64,
    pub hash: String,
    /// Consumers and credentials.
    pub auth: Authenticator,
    /// Proxies whose `X-Forwarded-For` entries are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The gateway's `access-log` policy, for requests no route matched.
    pub access_log: crate::access_log::Plan,
    /// TLS certificates by server name.
    pub certificates: Certificates,
    /// Every limiter in use, by fingerprint (handed on to the next version).
    limiters: HashMap<String, Arc<Limiter>>,
    router: Router,
    routes: Vec<RouteEntry>,
    /// The HTTP (and gRPC) services' upstreams, by service id.
    upstreams: HashMap<Uuid, Arc<Upstream>>,
    /// The AMQP services' broker connections, by service id.
    brokers: HashMap<Uuid, Arc<Broker>>,
}

impl Runtime {
    /// Compiles `snapshot`. Upstreams and broker connections of services
    /// unchanged since `previous` are carried over, and so are JWKS key
    /// sets and rate-limit counters still in use. Brokers connect on the
    /// current Tokio runtime.
    pub fn compile(gateway: &str, version: u64, snapshot: Snapshot, previous: Option<&Runtime>, context: &Context) -> Result<Self, String> {
        let config = &snapshot.config;
        let auth = Authenticator::compile(config, &context.auth, previous.map(|p| &p.auth))?;
        let certificates = Certificates::compile(&config.certificates)?;
        let no_limiters = HashMap::new();
        let previous_limiters = previous.map_or(&no_limiters, |p| &p.limiters);
        let mut limiters = HashMap::new();
        // A route or service without `retries` gets the defaults.
        let default_retries = Retries::when_absent();
        // By route id, and call name for an aggregate's calls.
        let mut previous_retries: HashMap<(Uuid, Option<&str>), Arc<RetryPlan>> = HashMap::new();
        for route in previous.map_or(&[][..], |p| &p.routes) {
            let Some(id) = route.id else { continue };
            match &route.backend {
                Backend::Proxy(target) => previous_retries.extend(target.retry.clone().map(|plan| ((id, None), plan))),
                Backend::Grpc(transcoding) => previous_retries.extend(transcoding.target.retry.clone().map(|plan| ((id, None), plan))),
                Backend::Aggregate(aggregation) => {
                    previous_retries.extend(aggregation.retries().map(|(call, plan)| ((id, Some(call)), plan.clone())));
                }
                Backend::Amqp(_) => {}
            }
        }
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .map(|c| c.parse::<ipnet::IpNet>().map_err(|e| format!("trusted proxy '{c}': {e}")))
            .collect::<Result<_, _>>()?;
        let mut upstreams = HashMap::new();
        let mut brokers = HashMap::new();
        let mut by_name = HashMap::new();
        let mut brokers_by_name = HashMap::new();
        for service in &config.services {
            let id = service.id.ok_or_else(|| format!("service '{}' has no id", service.name))?;
            if service.protocol.is_amqp() {
                let broker = Broker::new(broker_settings(service), previous.and_then(|p| p.brokers.get(&id)))?;
                brokers_by_name.insert(service.name.as_str(), (broker.clone(), service));
                brokers.insert(id, broker);
                continue;
            }
            let before = previous.and_then(|p| p.upstreams.get(&id));
            let upstream = match before.filter(|u| u.serves(service)) {
                Some(upstream) => upstream.clone(),
                None => {
                    let upstream = Arc::new(Upstream::new(service, before.map(|u| &**u))?);
                    upstream.start_checks();
                    upstream
                }
            };
            by_name.insert(service.name.as_str(), (upstream.clone(), service));
            upstreams.insert(id, upstream);
        }
        let mut pools = Pools::new(&config.protos);
        let mut routes = Vec::with_capacity(config.routes.len());
        let service_of = |name: &str, route: &str| by_name.get(name).ok_or_else(|| format!("route '{route}': unknown service '{name}'"));
        let broker_of = |name: &str, route: &str| {
            brokers_by_name.get(name).ok_or_else(|| format!("route '{route}': service '{name}' is no AMQP service"))
        };
        for (index, route) in config.routes.iter().enumerate() {
            let (service, broker) = match &route.backend {
                RouteBackend::Proxy { service } | RouteBackend::Grpc { service, .. } => (Some(service_of(service, &route.name)?), None),
                RouteBackend::Amqp { service, .. } => (None, Some(broker_of(service, &route.name)?)),
                RouteBackend::Aggregate { .. } => (None, None),
            };
            let service_model = service.map(|(_, s)| *s).or(broker.map(|(_, s)| *s));
            let policies = effective_policies(route, service_model, &config.policies);
            let max_body_bytes = max_body(&policies);
            let no_policies = Vec::new();
            let scopes = [
                (format!("route:{}", route.id.map(|id| id.to_string()).unwrap_or_default()), &route.policies),
                (
                    format!("service:{}", service_model.and_then(|s| s.id).map(|id| id.to_string()).unwrap_or_default()),
                    service_model.map_or(&no_policies, |s| &s.policies),
                ),
                ("gateway".to_owned(), &config.policies),
            ];
            let mut limits = Vec::new();
            for (scope, list) in scopes {
                for policy in list.iter().filter_map(|p| match p {
                    Policy::RateLimit(limit) => Some(limit),
                    _ => None,
                }) {
                    let fingerprint = Limiter::fingerprint_of(policy, &scope);
                    let limiter = match limiters.get(&fingerprint).or_else(|| previous_limiters.get(&fingerprint)) {
                        Some(limiter) => Arc::clone(limiter),
                        None => Arc::new(
                            Limiter::new(policy, fingerprint.clone(), &context.limits)
                                .map_err(|e| format!("route '{}': {e}", route.name))?,
                        ),
                    };
                    limiters.insert(fingerprint, limiter.clone());
                    // The same limit listed twice is one limit, not a halved one.
                    if !limits.iter().any(|l| Arc::ptr_eq(l, &limiter)) {
                        limits.push(limiter);
                    }
                }
            }
            let name: Arc<str> = route.name.as_str().into();
            let stages = Stages::compile(&name, &policies).map_err(|e| format!("route '{}': {e}", route.name))?;
            let backend = match (&route.backend, service) {
                (RouteBackend::Aggregate { aggregate }, _) => {
                    let target = |call: &AggregateCall| {
                        let (upstream, service) = service_of(&call.service, &route.name)?;
                        let kept = route.id.and_then(|id| previous_retries.get(&(id, Some(call.name.as_str()))));
                        let retry = retry_plan(service.retries.as_ref().unwrap_or(&default_retries), kept);
                        Ok(Target { upstream: upstream.clone(), retry, max_body_bytes })
                    };
                    Backend::Aggregate(Box::new(
                        Aggregation::compile(&name, aggregate, target).map_err(|e| format!("route '{}': {e}", route.name))?,
                    ))
                }
                (RouteBackend::Proxy { .. } | RouteBackend::Grpc { .. }, Some((upstream, service))) => {
                    let retries = route.retries.as_ref().or(service.retries.as_ref()).unwrap_or(&default_retries);
                    let kept = route.id.and_then(|id| previous_retries.get(&(id, None)));
                    let target = Target { upstream: upstream.clone(), retry: retry_plan(retries, kept), max_body_bytes };
                    match route.backend.grpc() {
                        None => Backend::Proxy(target),
                        Some(grpc) => {
                            let pool = pools.get(&grpc.proto).map_err(|e| format!("route '{}': {e}", route.name))?;
                            let transcoding = Transcoding::compile(name.clone(), grpc, pool, target, service)
                                .map_err(|e| format!("route '{}': {e}", route.name))?;
                            Backend::Grpc(Box::new(transcoding))
                        }
                    }
                }
                (RouteBackend::Proxy { service } | RouteBackend::Grpc { service, .. }, None) => {
                    return Err(format!("route '{}': unknown service '{service}'", route.name));
                }
                (RouteBackend::Amqp { amqp, .. }, _) => {
                    let (broker, _) = broker.ok_or_else(|| format!("route '{}': no AMQP service", route.name))?;
                    let key_header = policies.iter().find_map(|policy| match policy {
                        Policy::KeyAuth(key_auth) => Some(key_auth.header.as_str()),
                        _ => None,
                    });
                    let amqp = AmqpRoute::compile(amqp, broker.clone(), key_header).map_err(|e| format!("route '{}': {e}", route.name))?;
                    Backend::Amqp(Box::new(amqp))
                }
            };
            routes.push(RouteEntry {
                index,
                id: route.id,
                metrics: RouteMetrics::new(name.clone()),
                name,
                backend,
                strip_path: route.strip_path,
                preserve_host: route.preserve_host,
                https_only: route.https_only,
                max_body_bytes,
                auth: auth.plan(&policies, u32::try_from(index).unwrap_or(u32::MAX)),
                limits_after_auth: limits.iter().filter(|l| l.needs_identity()).cloned().collect(),
                limits_before_auth: limits.into_iter().filter(|l| !l.needs_identity()).collect(),
                stages,
            });
        }
        let router = Router::new(config.routes.iter().enumerate().map(|(index, route)| RouteSpec::of(index, route)));
        Ok(Self {
            gateway: gateway.to_owned(),
            version,
            hash: snapshot.hash,
            auth,
            trusted_proxies,
            access_log: crate::access_log::Plan::compile(&config.policies.iter().collect::<Vec<_>>()),
            certificates,
            limiters,
            router,
            routes,
            upstreams,
            brokers,
        })
    }

    /// The route for a request, with the prefix that matched.
    pub fn route(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Option<(&RouteEntry, Match)> {
        let found = self.router.lookup(host, path, method, headers)?;
        Some((&self.routes[found.route], found))
    }

    /// The route at `index` (a [`RouteEntry::index`]).
    pub fn route_at(&self, index: usize) -> &RouteEntry {
        &self.routes[index]
    }

    /// The scopes of every route's response cache.
    pub fn cache_scopes(&self) -> std::collections::HashSet<[u8; 32]> {
        self.routes.iter().filter_map(|route| route.stages.cache.as_deref()).map(CacheStage::scope).collect()
    }

    /// Number of routes.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// The upstream of a service id, if this runtime has it.
    pub fn upstream(&self, service: Uuid) -> Option<&Arc<Upstream>> {
        self.upstreams.get(&service)
    }

    /// The broker connection of an AMQP service id, if this runtime has it.
    pub fn broker(&self, service: Uuid) -> Option<&Arc<Broker>> {
        self.brokers.get(&service)
    }
}

/// The descriptors of the config's protos, each decoded the first time a
/// route asks for it.
struct Pools<'c> {
    protos: &'c [Proto],
    decoded: HashMap<&'c str, DescriptorPool>,
}

impl<'c> Pools<'c> {
    fn new(protos: &'c [Proto]) -> Self {
        Self { protos, decoded: HashMap::new() }
    }

    fn get(&mut self, name: &str) -> Result<&DescriptorPool, String> {
        let proto = self.protos.iter().find(|p| p.name == name).ok_or_else(|| format!("unknown proto '{name}'"))?;
        if !self.decoded.contains_key(name) {
            let pool = proto.pool().map_err(|e| format!("proto '{name}': {e}"))?;
            self.decoded.insert(&proto.name, pool);
        }
        Ok(&self.decoded[name])
    }
}

/// The retry plan for `retries`: `kept` (the previous version's, with its
/// budget) when it is for the same settings; none for a single try.
fn retry_plan(retries: &Retries, kept: Option<&Arc<RetryPlan>>) -> Option<Arc<RetryPlan>> {
    RetryPlan::wanted(retries)
        .then(|| kept.filter(|plan| plan.is_for(retries)).cloned().unwrap_or_else(|| Arc::new(RetryPlan::new(retries))))
}

fn max_body(policies: &[&Policy]) -> u64 {
    policies
        .iter()
        .filter_map(|p| match p {
            Policy::RequestSizeLimit { max_bytes } => Some(*max_bytes),
            _ => None,
        })
        .min()
        .unwrap_or(DEFAULT_MAX_BODY_BYTES)
}

#[cfg(test)]
mod tests {
    use portico_shared::GatewayConfig;
    use portico_shared::diff::merge;
    use portico_shared::parse::from_json;

    use super::*;

    fn snapshot(json: &str, previous: &GatewayConfig) -> Snapshot {
        let mut config: GatewayConfig = from_json(json.as_bytes()).unwrap();
        portico_shared::validate::config(&mut config).unwrap();
        Snapshot::compile(merge(previous, config, chrono::Utc::now())).unwrap()
    }

    fn settings() -> Context {
        Context {
            auth: AuthSettings {
                keys: portico_shared::secret::KeyHasher::from_cluster_token("cluster-token-for-tests"),
                token_cache_capacity: 10,
                http: reqwest::Client::new(),
            },
            limits: LimitSettings { redis: None, gateway: "default".into() },
        }
    }

    const TWO: &str = r#"{"services":[{"name":"a","targets":[{"url":"http://127.0.0.1:1"}]},{"name":"b","targets":[{"url":"http://127.0.0.1:2"}],
        "policies":[{"type":"request-size-limit","max_bytes":100}]}],
        "routes":[{"name":"ra","service":"a","paths":["/a"]},{"name":"rb","service":"b","paths":["/b"],"policies":[{"type":"request-size-limit","max_bytes":500}]}]}"#;

    #[test]
    fn unchanged_upstreams_survive_a_swap() {
        let first = snapshot(TWO, &GatewayConfig::default());
        let v1 = Runtime::compile("default", 1, first.clone(), None, &settings()).unwrap();
        let second = snapshot(&TWO.replace("127.0.0.1:2", "127.0.0.1:3"), &first.config);
        let v2 = Runtime::compile("default", 2, second.clone(), Some(&v1), &settings()).unwrap();
        let id = |name: &str| second.config.services.iter().find(|s| s.name == name).unwrap().id.unwrap();
        assert!(Arc::ptr_eq(v1.upstream(id("a")).unwrap(), v2.upstream(id("a")).unwrap()), "service a is unchanged");
        assert!(!Arc::ptr_eq(v1.upstream(id("b")).unwrap(), v2.upstream(id("b")).unwrap()), "service b changed");
    }

    #[test]
    fn an_aggregates_calls_keep_their_retry_budgets_across_a_swap() {
        let config = r#"{"services":[{"name":"a","targets":[{"url":"http://127.0.0.1:1"}]}],
            "routes":[{"name":"dash","paths":["/d"],"aggregate":{"calls":[{"name":"x","service":"a","path":"/x"},{"name":"y","service":"a","path":"/y"}]}}]}"#;
        let first = snapshot(config, &GatewayConfig::default());
        let v1 = Runtime::compile("default", 1, first.clone(), None, &settings()).unwrap();
        let v2 = Runtime::compile("default", 2, snapshot(&config.replace("/d", "/e"), &first.config), Some(&v1), &settings()).unwrap();
        let plans = |rt: &Runtime| match &rt.route_at(0).backend {
            Backend::Aggregate(aggregation) => {
                aggregation.retries().map(|(call, plan)| (call.to_owned(), plan.clone())).collect::<Vec<_>>()
            }
            _ => panic!("an aggregate route"),
        };
        let (before, after) = (plans(&v1), plans(&v2));
        assert_eq!((before.len(), after.len()), (2, 2));
        assert!(before.iter().zip(&after).all(|((a, p), (b, q))| a == b && Arc::ptr_eq(p, q)), "the same plans, budgets and all");
    }

    #[test]
    fn strictest_size_limit_applies() {
        let rt = Runtime::compile("default", 1, snapshot(TWO, &GatewayConfig::default()), None, &settings()).unwrap();
        let (b, _) = rt.route("h", "/b", &Method::POST, &HeaderMap::new()).unwrap();
        assert_eq!(b.max_body_bytes, 100);
        let (a, _) = rt.route("h", "/a", &Method::POST, &HeaderMap::new()).unwrap();
        assert_eq!(a.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn limiters_are_shared_by_scope_and_kept_until_their_limit_changes() {
        let limited = |n: u64| {
            format!(
                r#"{{"services":[{{"name":"a","targets":[{{"url":"http://127.0.0.1:1"}}]}}],
                "routes":[{{"name":"r1","service":"a","paths":["/1"],"policies":[{{"type":"rate-limit","algorithm":"fixed_window","limit":{n},"window_s":1}}]}},
                          {{"name":"r2","service":"a","paths":["/2"]}}],
                "policies":[{{"type":"rate-limit","algorithm":"token_bucket","limit":5,"window_s":1}}]}}"#
            )
        };
        let first = snapshot(&limited(3), &GatewayConfig::default());
        let v1 = Runtime::compile("default", 1, first.clone(), None, &settings()).unwrap();
        let route = |rt: &Runtime, path: &str| rt.route("h", path, &Method::GET, &HeaderMap::new()).unwrap().0.limits_before_auth.clone();
        let (r1, r2) = (route(&v1, "/1"), route(&v1, "/2"));
        assert_eq!((r1.len(), r2.len()), (2, 1), "the route's limit and the gateway's");
        assert!(Arc::ptr_eq(&r1[1], &r2[0]), "one gateway limit for every route");

        let same = snapshot(&limited(3).replace(r#""name":"r2""#, r#""name":"r2","tags":["edited"]"#), &first.config);
        let v2 = Runtime::compile("default", 2, same.clone(), Some(&v1), &settings()).unwrap();
        assert!(Arc::ptr_eq(&route(&v1, "/1")[0], &route(&v2, "/1")[0]), "an unrelated edit keeps the counters");
        let changed = snapshot(&limited(4), &same.config);
        let v3 = Runtime::compile("default", 3, changed, Some(&v2), &settings()).unwrap();
        assert!(!Arc::ptr_eq(&route(&v2, "/1")[0], &route(&v3, "/1")[0]), "a changed limit starts afresh");
        assert!(Arc::ptr_eq(&route(&v2, "/2")[0], &route(&v3, "/2")[0]));
    }

    #[tokio::test]
    async fn a_snapshot_stored_by_0_1_compiles_and_routes() {
        let bytes = include_bytes!("../../shared/tests/fixtures/snapshot-v0.1.json");
        let hash = include_str!("../../shared/tests/fixtures/snapshot-v0.1.json.sha256").trim();
        let stored = Snapshot::decode(bytes, hash).unwrap();
        // Its one Redis limit needs --redis-url, which these settings lack (that refusal is tested above).
        let mut config = stored.config;
        for route in &mut config.routes {
            for policy in &mut route.policies {
                if let Policy::RateLimit(limit) = policy {
                    limit.backend = portico_shared::model::RateLimitBackend::Local;
                }
            }
        }
        let routes = config.routes.len();
        let snapshot = Snapshot::compile(config).unwrap();
        let runtime =
            Runtime::compile("default", 1, snapshot, None, &settings()).unwrap_or_else(|e| panic!("the 0.1 snapshot does not serve: {e}"));
        assert_eq!(runtime.route_count(), routes);
        let mut headers = HeaderMap::new();
        headers.insert("x-version", http::HeaderValue::from_static("2"));
        let (route, _) = runtime.route("api.example.test", "/users/7", &Method::GET, &headers).unwrap();
        assert_eq!(&*route.name, "users-api");
    }

    #[tokio::test]
    async fn amqp_routes_publish_to_a_broker_kept_while_its_service_is_unchanged() {
        let config = |port: u16, weight: u32| {
            format!(
                r#"{{"services":[{{"name":"events","protocol":"amqp","targets":[{{"url":"amqp://127.0.0.1:1","weight":0}},{{"url":"amqp://127.0.0.1:{port}/%2F","weight":{weight}}}],
                "credentials":{{"username":"app","password":"pw"}},"timeouts":{{"connect_ms":700}}}}],
                "routes":[{{"name":"e","service":"events","paths":["/e/{{kind}}"],"amqp":{{"exchange":"orders","routing_key":"order.{{path.kind}}","headers":["x-tenant"]}},
                "policies":[{{"type":"key-auth","header":"x-key"}}]}}]}}"#
            )
        };
        let first = snapshot(&config(5672, 1), &GatewayConfig::default());
        let id = first.config.services[0].id.unwrap();
        let v1 = Runtime::compile("default", 1, first.clone(), None, &settings()).unwrap();
        assert!(v1.upstream(id).is_none(), "no HTTP upstream for a broker");
        let broker = v1.broker(id).unwrap();
        let wanted = broker.settings();
        assert_eq!(wanted.targets, ["amqp://127.0.0.1:5672/%2F"], "targets of weight 0 are left out");
        assert_eq!(wanted.credentials.as_ref().map(|c| (c.username.as_str(), c.password.as_str())), Some(("app", "pw")));
        assert_eq!(wanted.connect_timeout, std::time::Duration::from_millis(700));
        let (route, _) = v1.route("h", "/e/created", &Method::POST, &HeaderMap::new()).unwrap();
        let Backend::Amqp(amqp) = &route.backend else { panic!("an amqp route: {:?}", route.backend) };
        assert_eq!((route.backend.label(), amqp.settings.exchange.as_str()), ("events", "orders"));
        assert!(route.backend.target().is_none() && route.backend.upstream().is_none());

        let renamed = snapshot(&config(5672, 1).replace(r#""name":"e""#, r#""name":"e2""#), &first.config);
        let v2 = Runtime::compile("default", 2, renamed.clone(), Some(&v1), &settings()).unwrap();
        assert!(Arc::ptr_eq(v1.broker(id).unwrap(), v2.broker(id).unwrap()), "the service is unchanged: the same connection");
        let moved = snapshot(&config(5673, 5), &renamed.config);
        let v3 = Runtime::compile("default", 3, moved, Some(&v2), &settings()).unwrap();
        assert!(!Arc::ptr_eq(v2.broker(id).unwrap(), v3.broker(id).unwrap()), "another broker: a new connection");

        let copies_the_key = config(5672, 1).replace(r#"["x-tenant"]"#, r#"["x-tenant","x-key"]"#);
        let error = portico_shared::validate::config(&mut from_json(copies_the_key.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(error.first().field(), "routes[0].amqp.headers[1]", "refused when written");
    }

    #[test]
    fn a_redis_limit_without_redis_is_refused_with_the_flag_named() {
        let config = r#"{"services":[{"name":"a","targets":[{"url":"http://127.0.0.1:1"}]}],
            "routes":[{"name":"r","service":"a","paths":["/"],"policies":[{"type":"rate-limit","algorithm":"fixed_window","limit":1,"window_s":1,"backend":"redis"}]}]}"#;
        let error = Runtime::compile("default", 1, snapshot(config, &GatewayConfig::default()), None, &settings()).unwrap_err();
        assert!(error.contains("route 'r'") && error.contains("--redis-url"), "{error}");
    }
}
