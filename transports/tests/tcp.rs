//! The TCP transport on real loopback sockets.

use std::net::SocketAddr;

use tickwire_transports::conformance::{self, Params, Profile};
use tickwire_transports::tcp::{
    TcpPublisher, TcpPublisherConfig, TcpSubscriber, TcpSubscriberConfig,
};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn conformance_suite() {
    conformance::run_all(
        &Profile::STREAM,
        &Params::default(),
        || TcpPublisher::bind(any_port(), TcpPublisherConfig::default()).unwrap(),
        |p| TcpSubscriber::connect(p.local_addr(), TcpSubscriberConfig::default()).unwrap(),
    );
}
