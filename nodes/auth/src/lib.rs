//! Who a client is and what it may pull.
//!
//! A request's `Authorization` header is read by [`credentials`], checked by [`htpasswd`]
//! (HTTP Basic), [`token`] (tokens wharf issued through Docker's token flow) or [`jwt`]
//! (tokens of an external issuer), giving an [`Identity`]; the [`policy`] then decides per
//! repository. [`Authenticator`] ties them together for the API edge; [`reload`] keeps the
//! files they read current without a restart.

pub mod authenticator;
pub mod credentials;
pub mod error;
pub mod htpasswd;
pub mod jwt;
pub mod policy;
pub mod reload;
pub mod token;

pub use authenticator::{Authenticated, Authenticator, Decision};
pub use error::AuthError;

/// Who made a request, once its credentials were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials were presented.
    Anonymous,
    /// A user proven by a password, a wharf token or an external JWT.
    User { name: String, groups: Vec<String> },
}

impl Identity {
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::User { name, .. } => Some(name),
        }
    }
}
