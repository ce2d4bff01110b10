//! Typed dispatch: any frame body, in either direction, to its message view.
//!
//! The proxy's hot path looks only at the type byte and parses the few
//! messages it acts on; these enums are for tests, fuzzing and tools that
//! want every message typed.

use super::auth::Authentication;
use super::copy::{self, CopyFail, CopyResponse};
use super::extended::{Bind, Close, Describe, Execute, Parse};
use super::function::{FunctionCall, FunctionCallResponse};
use super::notice::NoticeFields;
use super::notification::NotificationResponse;
use super::query::Query;
use super::replies::{self, ParameterDescription};
use super::rows::{CommandComplete, DataRow, RowDescription};
use super::status::{BackendKeyData, NegotiateProtocolVersion, ParameterStatus, ReadyForQuery};
use super::wire::MessageError;
use bytes::Bytes;

/// A message from the client (after the startup phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// `Q`.
    Query(Query<'a>),
    /// `P`.
    Parse(Parse<'a>),
    /// `B`.
    Bind(Bind<'a>),
    /// `D`.
    Describe(Describe<'a>),
    /// `E`.
    Execute(Execute<'a>),
    /// `C`.
    Close(Close<'a>),
    /// `S`.
    Sync,
    /// `H`.
    Flush,
    /// `d`.
    CopyData(&'a [u8]),
    /// `c`.
    CopyDone,
    /// `f`.
    CopyFail(CopyFail<'a>),
    /// `F`.
    FunctionCall(FunctionCall),
    /// `X`.
    Terminate,
    /// `p`: PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse
    /// (which one depends on the authentication request it answers).
    Password(&'a [u8]),
}

impl<'a> FrontendMessage<'a> {
    /// Parses a client message body.
    pub fn parse(tag: u8, body: &'a [u8]) -> Result<Self, MessageError> {
        Ok(match tag {
            b'Q' => Self::Query(Query::parse(body)?),
            b'P' => Self::Parse(Parse::parse(body)?),
            b'B' => Self::Bind(Bind::parse(body)?),
            b'D' => Self::Describe(Describe::parse(body)?),
            b'E' => Self::Execute(Execute::parse(body)?),
            b'C' => Self::Close(Close::parse(body)?),
            b'S' => {
                copy::parse_empty(body, "Sync")?;
                Self::Sync
            }
            b'H' => {
                copy::parse_empty(body, "Flush")?;
                Self::Flush
            }
            b'd' => Self::CopyData(body),
            b'c' => {
                copy::parse_empty(body, "CopyDone")?;
                Self::CopyDone
            }
            b'f' => Self::CopyFail(CopyFail::parse(body)?),
            b'F' => Self::FunctionCall(FunctionCall::parse(body)?),
            b'X' => {
                copy::parse_empty(body, "Terminate")?;
                Self::Terminate
            }
            b'p' => Self::Password(body),
            other => {
                return Err(MessageError::UnknownTag {
                    tag: char::from(other),
                    direction: "client",
                });
            }
        })
    }
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    /// `R`.
    Authentication(Authentication<'a>),
    /// `S`.
    ParameterStatus(ParameterStatus<'a>),
    /// `K`.
    BackendKeyData(BackendKeyData<'a>),
    /// `Z`.
    ReadyForQuery(ReadyForQuery),
    /// `T`.
    RowDescription(RowDescription),
    /// `D`.
    DataRow(DataRow<'a>),
    /// `C`.
    CommandComplete(CommandComplete<'a>),
    /// `I`.
    EmptyQueryResponse,
    /// `E`.
    ErrorResponse(NoticeFields<'a>),
    /// `N`.
    NoticeResponse(NoticeFields<'a>),
    /// `A`.
    Notification(NotificationResponse<'a>),
    /// `G`.
    CopyInResponse(CopyResponse<'a>),
    /// `H`.
    CopyOutResponse(CopyResponse<'a>),
    /// `W`.
    CopyBothResponse(CopyResponse<'a>),
    /// `d`.
    CopyData(&'a [u8]),
    /// `c`.
    CopyDone,
    /// `t`.
    ParameterDescription(ParameterDescription),
    /// `1`.
    ParseComplete,
    /// `2`.
    BindComplete,
    /// `3`.
    CloseComplete,
    /// `n`.
    NoData,
    /// `s`.
    PortalSuspended,
    /// `v`.
    NegotiateProtocolVersion(NegotiateProtocolVersion<'a>),
    /// `V`.
    FunctionCallResponse(FunctionCallResponse<'a>),
}

impl<'a> BackendMessage<'a> {
    /// Parses a server message body.
    pub fn parse(tag: u8, body: &'a [u8]) -> Result<Self, MessageError> {
        Ok(match tag {
            b'R' => Self::Authentication(Authentication::parse(body)?),
            b'S' => Self::ParameterStatus(ParameterStatus::parse(body)?),
            b'K' => Self::BackendKeyData(BackendKeyData::parse(body)?),
            b'Z' => Self::ReadyForQuery(ReadyForQuery::parse(body)?),
            b'T' => Self::RowDescription(RowDescription::parse(Bytes::copy_from_slice(body))?),
            b'D' => Self::DataRow(DataRow::parse(body)?),
            b'C' => Self::CommandComplete(CommandComplete::parse(body)?),
            b'I' => {
                replies::parse_ack(body, "EmptyQueryResponse")?;
                Self::EmptyQueryResponse
            }
            b'E' => Self::ErrorResponse(NoticeFields::parse(body)?),
            b'N' => Self::NoticeResponse(NoticeFields::parse(body)?),
            b'A' => Self::Notification(NotificationResponse::parse(body)?),
            b'G' => Self::CopyInResponse(CopyResponse::parse(body)?),
            b'H' => Self::CopyOutResponse(CopyResponse::parse(body)?),
            b'W' => Self::CopyBothResponse(CopyResponse::parse(body)?),
            b'd' => Self::CopyData(body),
            b'c' => {
                replies::parse_ack(body, "CopyDone")?;
                Self::CopyDone
            }
            b't' => Self::ParameterDescription(ParameterDescription::parse(body)?),
            b'1' => {
                replies::parse_ack(body, "ParseComplete")?;
                Self::ParseComplete
            }
            b'2' => {
                replies::parse_ack(body, "BindComplete")?;
                Self::BindComplete
            }
            b'3' => {
                replies::parse_ack(body, "CloseComplete")?;
                Self::CloseComplete
            }
            b'n' => {
                replies::parse_ack(body, "NoData")?;
                Self::NoData
            }
            b's' => {
                replies::parse_ack(body, "PortalSuspended")?;
                Self::PortalSuspended
            }
            b'v' => Self::NegotiateProtocolVersion(NegotiateProtocolVersion::parse(body)?),
            b'V' => Self::FunctionCallResponse(FunctionCallResponse::parse(body)?),
            other => {
                return Err(MessageError::UnknownTag {
                    tag: char::from(other),
                    direction: "server",
                });
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn direction_decides_meaning() {
        assert!(matches!(
            FrontendMessage::parse(b'D', b"Pp\0").unwrap(),
            FrontendMessage::Describe(_)
        ));
        assert!(matches!(
            BackendMessage::parse(b'D', &[0, 0]).unwrap(),
            BackendMessage::DataRow(_)
        ));
        assert!(matches!(
            FrontendMessage::parse(b'S', b"").unwrap(),
            FrontendMessage::Sync
        ));
        assert!(matches!(
            BackendMessage::parse(b'S', b"a\0b\0").unwrap(),
            BackendMessage::ParameterStatus(_)
        ));
        assert!(FrontendMessage::parse(b'?', b"").is_err());
    }
}
