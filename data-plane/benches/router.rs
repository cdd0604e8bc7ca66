//! Route lookup cost with 10, 100 and 10,000 routes: a hit deep in the
//! table, a wildcard-host hit and a miss; then the same in tables where one
//! route in three has an `{id}` parameter, for a literal route, a
//! parameter route and a miss. `cargo bench -p portico-dp --bench router`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use portico_dp::router::{RouteSpec, Router};

struct Def {
    name: String,
    paths: Vec<String>,
    hosts: Vec<String>,
    methods: Vec<String>,
}

/// `n` routes: every tenth on its own host, every hundredth on a wildcard
/// host, the rest host-less, each with a distinct two-segment path; with
/// `params`, one in three is `/service-k/resource-i/{id}/items` instead.
fn defs(n: usize, params: bool) -> Vec<Def> {
    (0..n)
        .map(|i| Def {
            name: format!("route-{i}"),
            paths: vec![match i % 3 {
                0 if params => format!("/service-{}/resource-{i}/{{id}}/items", i % 97),
                _ => format!("/service-{}/resource-{i}", i % 97),
            }],
            hosts: match i {
                _ if i % 100 == 0 => vec![format!("*.tenant-{i}.example.com")],
                _ if i % 10 == 0 => vec![format!("api-{i}.example.com")],
                _ => vec![],
            },
            methods: if i % 2 == 0 { vec!["GET".into()] } else { vec![] },
        })
        .collect()
}

fn router(defs: &[Def]) -> Router {
    let headers = BTreeMap::new();
    Router::new(defs.iter().enumerate().map(|(index, d)| RouteSpec {
        index,
        name: &d.name,
        paths: &d.paths,
        hosts: &d.hosts,
        methods: &d.methods,
        headers: &headers,
    }))
}

fn lookups(c: &mut Criterion) {
    let headers = HeaderMap::new();
    for n in [10, 100, 10_000] {
        let defs = defs(n, false);
        let table = router(&defs);
        let last = n - 1;
        let hit = format!("/service-{}/resource-{last}/items/42", last % 97);
        c.bench_function(&format!("hit/{n} routes"), |b| {
            b.iter(|| table.lookup(black_box("anything.example.org"), black_box(&hit), &Method::GET, &headers).expect("hit"))
        });
        c.bench_function(&format!("miss/{n} routes"), |b| {
            b.iter(|| table.lookup(black_box("anything.example.org"), black_box("/nothing/here"), &Method::GET, &headers))
        });
        if n > 100 {
            let wildcard = format!("/service-{}/resource-{}", 100 % 97, 100);
            c.bench_function(&format!("wildcard host/{n} routes"), |b| {
                b.iter(|| table.lookup(black_box("eu.tenant-100.example.com"), black_box(&wildcard), &Method::GET, &headers).expect("hit"))
            });
        }
    }
    for n in [10, 100, 10_000] {
        let defs = defs(n, true);
        let table = router(&defs);
        // The last literal route (i % 3 != 0) and the last parameter route
        // (i % 3 == 0), both host-less (i % 10 != 0).
        let literal = (0..n).rev().find(|i| i % 3 != 0 && i % 10 != 0).expect("a literal route");
        let param = (0..n).rev().find(|i| i % 3 == 0 && i % 10 != 0).expect("a parameter route");
        let hit_literal = format!("/service-{}/resource-{literal}/items/42", literal % 97);
        let hit_param = format!("/service-{}/resource-{param}/42/items/7", param % 97);
        let expected = table.lookup("anything.example.org", &hit_param, &Method::GET, &headers).expect("the parameter route");
        assert_eq!((expected.route, expected.param("id")), (param, Some("42")));
        c.bench_function(&format!("params hit literal/{n} routes"), |b| {
            b.iter(|| table.lookup(black_box("anything.example.org"), black_box(&hit_literal), &Method::GET, &headers).expect("hit"))
        });
        c.bench_function(&format!("params hit {{id}}/{n} routes"), |b| {
            b.iter(|| table.lookup(black_box("anything.example.org"), black_box(&hit_param), &Method::GET, &headers).expect("hit"))
        });
        c.bench_function(&format!("params miss/{n} routes"), |b| {
            b.iter(|| table.lookup(black_box("anything.example.org"), black_box("/nothing/here"), &Method::GET, &headers))
        });
    }
    let defs = defs(10_000, false);
    c.bench_function("build/10000 routes", |b| b.iter(|| router(black_box(&defs))));
    let defs = self::defs(10_000, true);
    c.bench_function("params build/10000 routes", |b| b.iter(|| router(black_box(&defs))));
}

criterion_group!(benches, lookups);
criterion_main!(benches);
