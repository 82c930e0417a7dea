//! Bodies of the control packets that carry one: LoginAck and NackReject.

use super::{DecodeError, Field, get_u64, set_u64};
use crate::seq::SeqNo;

mod field {
    use super::Field;
    // LoginAck
    pub const ACK_OLDEST: Field = 0..8;
    pub const ACK_MODE: usize = 8;
    pub const ACK_RESERVED: Field = 9..16;
    // NackReject
    pub const REJ_OLDEST: Field = 0..8;
    pub const REJ_NEXT: Field = 8..16;
}

/// How the server will bring a TCP client up to date after its Login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginMode {
    /// Retransmissions from the requested sequence follow, then live data.
    Resume,
    /// A snapshot consistent at the LoginAck's `first_seq` follows, then live data.
    Snapshot,
    /// A mode this version does not know.
    Unknown(u8),
}

impl LoginMode {
    /// Wire byte.
    pub const fn to_byte(self) -> u8 {
        match self {
            LoginMode::Resume => 0,
            LoginMode::Snapshot => 1,
            LoginMode::Unknown(b) => b,
        }
    }
    /// Mode for a wire byte.
    pub const fn from_byte(b: u8) -> LoginMode {
        match b {
            0 => LoginMode::Resume,
            1 => LoginMode::Snapshot,
            b => LoginMode::Unknown(b),
        }
    }
}

/// A view of a LoginAck body.
#[derive(Debug, Clone)]
pub struct LoginAck<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> LoginAck<T> {
    /// Length of the body.
    pub const LEN: usize = 16;
    /// Wrap without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        LoginAck { buffer }
    }
    /// Wrap and check.
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }
    /// Exactly [`Self::LEN`] bytes.
    pub fn check_len(&self) -> Result<(), DecodeError> {
        let have = self.buffer.as_ref().len();
        if have != Self::LEN {
            return Err(DecodeError::Malformed("LoginAck body is not 16 bytes"));
        }
        Ok(())
    }
    /// Oldest sequence the server still retains.
    pub fn oldest(&self) -> SeqNo {
        SeqNo(get_u64(self.buffer.as_ref(), field::ACK_OLDEST.start))
    }
    /// How the client will be brought up to date.
    pub fn mode(&self) -> LoginMode {
        LoginMode::from_byte(self.buffer.as_ref()[field::ACK_MODE])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> LoginAck<T> {
    /// Write the body.
    pub fn emit(&mut self, r: &LoginAckRepr) {
        let b = self.buffer.as_mut();
        set_u64(b, field::ACK_OLDEST.start, r.oldest.0);
        b[field::ACK_MODE] = r.mode.to_byte();
        b[field::ACK_RESERVED].fill(0);
    }
}

/// LoginAck body values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginAckRepr {
    /// Oldest sequence the server retains.
    pub oldest: SeqNo,
    /// Resume or snapshot.
    pub mode: LoginMode,
}

impl LoginAckRepr {
    /// Parse a LoginAck body.
    pub fn parse(body: &[u8]) -> Result<LoginAckRepr, DecodeError> {
        let v = LoginAck::new_checked(body)?;
        Ok(LoginAckRepr {
            oldest: v.oldest(),
            mode: v.mode(),
        })
    }
}

/// A view of a NackReject body.
#[derive(Debug, Clone)]
pub struct NackReject<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NackReject<T> {
    /// Length of the body.
    pub const LEN: usize = 16;
    /// Wrap without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        NackReject { buffer }
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
            return Err(DecodeError::Malformed("NackReject body is not 16 bytes"));
        }
        Ok(())
    }
    /// Oldest sequence the server retains.
    pub fn oldest(&self) -> SeqNo {
        SeqNo(get_u64(self.buffer.as_ref(), field::REJ_OLDEST.start))
    }
    /// Next sequence the server will publish.
    pub fn next(&self) -> SeqNo {
        SeqNo(get_u64(self.buffer.as_ref(), field::REJ_NEXT.start))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NackReject<T> {
    /// Write the body.
    pub fn emit(&mut self, r: &NackRejectRepr) {
        let b = self.buffer.as_mut();
        set_u64(b, field::REJ_OLDEST.start, r.oldest.0);
        set_u64(b, field::REJ_NEXT.start, r.next.0);
    }
}

/// NackReject body values: the server's window is `[oldest, next)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackRejectRepr {
    /// Oldest retained sequence.
    pub oldest: SeqNo,
    /// Next sequence to be published.
    pub next: SeqNo,
}

impl NackRejectRepr {
    /// Parse a NackReject body.
    pub fn parse(body: &[u8]) -> Result<NackRejectRepr, DecodeError> {
        let v = NackReject::new_checked(body)?;
        Ok(NackRejectRepr {
            oldest: v.oldest(),
            next: v.next(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut b = [0xffu8; 16];
        let r = LoginAckRepr {
            oldest: SeqNo(5),
            mode: LoginMode::Snapshot,
        };
        LoginAck::new_unchecked(&mut b[..]).emit(&r);
        assert_eq!(LoginAckRepr::parse(&b).unwrap(), r);
        assert_eq!(&b[9..], &[0u8; 7]);
        assert!(LoginAckRepr::parse(&b[..15]).is_err());
        let r = NackRejectRepr {
            oldest: SeqNo(10),
            next: SeqNo(20),
        };
        NackReject::new_unchecked(&mut b[..]).emit(&r);
        assert_eq!(NackRejectRepr::parse(&b).unwrap(), r);
    }
}
