//! # tickwire-examples
//!
//! Small programs that use the Tickwire libraries, each starting with the
//! command that runs it:
//!
//! * `subscribe.rs`: subscribe to a feed with
//!   [`tickwire_client::Subscriber`] and print one symbol's quotes;
//! * `publish.rs`: publish messages of your own with
//!   [`tickwire_server::publish`] and a [`tickwire_server::MessageSource`];
//! * `custom_transport.rs`: a transport of your own (an in-process one),
//!   checked with [`tickwire_transports::conformance`].
//!
//! `tests/examples.rs` runs each of them over loopback and checks what it
//! does against an independent expectation (`cargo test -p tickwire-examples`).
//! This library itself is empty: a package needs a target besides its examples.
