//! Address validation and session status: the body of a Status packet (the
//! recovery service's unicast answer to a Probe, and its challenge to an
//! unvalidated request), and the 8-byte bodies requests carry (a Probe's
//! nonce; a NACK's or SnapshotRequest's cookie).
//!
//! ```text
//! Status body  0..8   cookie    u64 LE  echo it in requests (FLAG_COOKIE) to this service
//!              8..16  echo      u64 LE  the Probe's nonce; 0 when answering another request
//!             16..24  instance  u64 LE  identifies the server process (a restart changes it)
//!             24      state     u8      0 live, 1 ended (header first_seq is one past the last)
//!             25..32  reserved  zero
//! ```

use super::{DecodeError, Field, get_u64, set_u64};

mod field {
    use super::Field;
    pub const COOKIE: Field = 0..8;
    pub const ECHO: Field = 8..16;
    pub const INSTANCE: Field = 16..24;
    pub const STATE: usize = 24;
    pub const RESERVED: Field = 25..32;
}

/// Bytes of the cookie a request carries when it sets [`super::FLAG_COOKIE`],
/// and of a Probe's nonce: its whole payload.
pub const TOKEN_LEN: usize = 8;

/// A view of a Status body.
#[derive(Debug, Clone)]
pub struct Status<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Status<T> {
    /// Length of the body.
    pub const LEN: usize = 32;
    /// Wrap without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Status { buffer }
    }
    /// Wrap and check.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }
    /// Exactly [`Self::LEN`] bytes.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        if self.buffer.as_ref().len() != Self::LEN {
            return Err(DecodeError::Malformed("Status body is not 32 bytes"));
        }
        Ok(())
    }
    /// The cookie to echo.
    pub fn cookie(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::COOKIE.start)
    }
    /// The nonce of the Probe answered (0: not an answer to a Probe).
    pub fn echo(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::ECHO.start)
    }
    /// The server instance.
    pub fn instance(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::INSTANCE.start)
    }
    /// The state byte (0 live, 1 ended, others unknown).
    pub fn state(&self) -> u8 {
        self.buffer.as_ref()[field::STATE]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Status<T> {
    /// Write the body.
    pub fn emit(&mut self, r: &StatusRepr) {
        let b = self.buffer.as_mut();
        set_u64(b, field::COOKIE.start, r.cookie);
        set_u64(b, field::ECHO.start, r.echo);
        set_u64(b, field::INSTANCE.start, r.instance);
        b[field::STATE] = u8::from(r.ended);
        b[field::RESERVED].fill(0);
    }
}

/// Status body values. The header's `epoch` is the server's session and its
/// `first_seq` the next sequence it will publish (one past the last once
/// `ended`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRepr {
    /// The requester's cookie.
    pub cookie: u64,
    /// The Probe nonce answered, 0 for a challenge.
    pub echo: u64,
    /// The server instance.
    pub instance: u64,
    /// The session has ended.
    pub ended: bool,
}

impl StatusRepr {
    /// The Status a server sends right after a `LoginAck` on a stream: its
    /// instance and state, no cookie, `echo` 0 (PROTOCOL.md § 9).
    pub fn login(instance: u64, ended: bool) -> StatusRepr {
        StatusRepr { cookie: 0, echo: 0, instance, ended }
    }

    /// Parse a Status body. A state byte other than 0 or 1 is malformed.
    pub fn parse(body: &[u8]) -> Result<StatusRepr, DecodeError> {
        let v = Status::new_checked(body)?;
        let ended = match v.state() {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::Malformed("Status state is neither 0 nor 1")),
        };
        Ok(StatusRepr { cookie: v.cookie(), echo: v.echo(), instance: v.instance(), ended })
    }
}

/// The 8-byte token (cookie or nonce) a request's payload is made of.
pub fn parse_token(body: &[u8]) -> Result<u64, DecodeError> {
    if body.len() != TOKEN_LEN {
        return Err(DecodeError::Malformed("token payload is not 8 bytes"));
    }
    Ok(get_u64(body, 0))
}

/// Write an 8-byte token into `body[..8]`.
pub fn emit_token(body: &mut [u8], token: u64) {
    set_u64(body, 0, token);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        let mut b = [0xffu8; 32];
        let r = StatusRepr { cookie: 1, echo: 2, instance: 3, ended: true };
        Status::new_unchecked(&mut b[..]).emit(&r);
        assert_eq!(StatusRepr::parse(&b).unwrap(), r);
        assert_eq!(&b[25..], &[0u8; 7]);
        assert!(StatusRepr::parse(&b[..31]).is_err());
        b[24] = 2;
        assert!(StatusRepr::parse(&b).is_err());
        let mut t = [0u8; 8];
        emit_token(&mut t, 0xdead_beef);
        assert_eq!(parse_token(&t).unwrap(), 0xdead_beef);
        assert!(parse_token(&t[..7]).is_err());
    }
}
