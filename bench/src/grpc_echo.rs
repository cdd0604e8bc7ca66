//! The gRPC upstream of `bench/grpc`: the test suite's tonic server
//! (`portico_test_support::grpc`, `echo.v1.Echo` from
//! `test-support/proto/echo/v1/echo.proto`, HTTP/2 with prior knowledge)
//! on a loopback port of its choosing, printed as `127.0.0.1:<port>` on
//! standard output once it accepts connections; it serves until killed.
//! `Say` answers the request's text at once (no `delay_ms`), so a
//! `SayReply` encodes to the same bytes as the `SayRequest` it answers.
//!
//! Single-threaded (`bench/grpc` pins it to the load generator's core).

use portico_test_support::grpc::GrpcUpstream;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let upstream = GrpcUpstream::start().await;
        println!("{}", upstream.addr);
        std::future::pending::<()>().await;
    });
}
