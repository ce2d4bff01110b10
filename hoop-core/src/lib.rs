//! hoop's protocol-neutral core: the vocabulary a wire-protocol driver and
//! the governance layer (policy, masking, holds, recording) share.
//!
//! - [`identity`]: who a session is ([`SessionIdentity`], [`Protocol`]).
//! - [`statement`]: what a statement is and what was decided about it
//!   ([`StatementKind`], [`Submission`], [`Verdict`]).
//! - [`result`]: result columns with their source, and row values
//!   ([`ResultColumn`], [`RowValues`], [`RowEncoder`]).
//! - [`refusal`]: what a client is told when hoop refuses something
//!   ([`Refusal`]); each driver encodes it in its own protocol.
//! - [`governor`]: the hooks a driver calls ([`SessionGovernor`]).
//! - [`hold`]: how a driver files a hold and waits for its decision
//!   ([`HoldBroker`]).
//! - [`resolve`]: the port through which governance asks a protocol's
//!   catalog what a column key names ([`ColumnResolver`]).
//! - [`credential`]: which database credential hoop injects into a session
//!   ([`CredentialSource`], [`Secret`]).
//! - [`metrics`]: the process-wide Prometheus registry.
//!
//! Nothing here knows a wire format. A driver translates its protocol's
//! messages into these types, and these types back into its messages.

// One exception, `hint::prefetch_for_write`: a CPU hint that reads nothing.
#![deny(unsafe_code)]

pub mod credential;
pub mod governor;
pub mod hint;
pub mod hold;
pub mod identity;
pub mod metrics;
pub mod refusal;
pub mod resolve;
pub mod result;
pub mod statement;

pub use credential::{
    ClientAuth, CredentialFailure, CredentialSource, CredentialUnavailable, InjectedCredential,
    NoCredentials, Secret,
};
pub use governor::{
    AllowAll, DataDirection, GovernorFactory, ObjectChange, Preparation, RowRewrite, RowRewriter,
    ServerText, ServerTextKind, SessionEvent, SessionGovernor, StatementContext, TransactionState,
};
pub use hold::{DenyHolds, HoldBroker, HoldOutcome, HoldRequest, HoldTicket};
pub use identity::{PodIdentity, Protocol, SessionIdentity};
pub use refusal::{Refusal, RefusalReason};
pub use resolve::{ColumnResolver, NoCatalog, RelationName, ViewDependency};
pub use result::{
    ColumnSource, ResolvedColumn, ResultColumn, RowEncoder, RowValues, SourceKey, ValueContent,
    ValueEncoding, ValueSpans,
};
pub use statement::{Denial, HoldRequirement, StatementKind, Submission, Verdict};
