//! The `Tokens` gRPC service: issue, revoke and list operator tokens (SPEC §3.4).
//!
//! A token is generated here, shown once in the reply, and only its SHA-256 is committed. The
//! state machine owns the rules (unique names, revocation); this module must not store or log
//! a plaintext token.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::Identity;
use super::context::{ApiContext, caller};
use crate::error::{Code, Error};
use crate::pki::now_unix_ms;
use crate::pki::tokens::OperatorToken as Generator;
use crate::proto::v1 as pb;
use crate::proto::v1::command::Kind;
use crate::proto::v1::tokens_server::Tokens;

/// The `Tokens` service.
pub struct TokensService {
    context: Arc<ApiContext>,
}

impl TokensService {
    /// The service over the shared API context.
    pub fn new(context: Arc<ApiContext>) -> Self {
        TokensService { context }
    }
}

/// An operator token without the privilege may not mint one with it.
fn check_escalation(identity: &Identity, allow_privileged: bool) -> Result<(), Error> {
    match identity {
        Identity::Operator {
            name,
            allow_privileged: false,
        } if allow_privileged => Err(Error::new(
            Code::PermissionDenied,
            format!(
                "token {name} is not allowed to deploy privileged services, so it cannot issue \
                 a token that is"
            ),
        )
        .with("identity", name)
        .with("reason", "privilege_escalation")),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn issue(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let request = request.into_inner();
        check_escalation(&identity, request.allow_privileged)?;
        let (plaintext, sha256) = Generator::generate();
        let issued_at = now_unix_ms();
        member
            .submit(
                &identity,
                Kind::IssueOperatorToken(pb::IssueOperatorToken {
                    token: Some(pb::OperatorToken {
                        name: request.name.clone(),
                        sha256: sha256.to_vec(),
                        issued_at_unix_ms: issued_at,
                        revoked_at_unix_ms: 0,
                        allow_privileged: request.allow_privileged,
                        issued_by: identity.audit_name(),
                    }),
                }),
            )
            .await?;
        Ok(Response::new(pb::IssueTokenResponse {
            name: request.name,
            token: plaintext,
            issued_at_unix_ms: issued_at,
            allow_privileged: request.allow_privileged,
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let identity = caller(&request)?;
        let member = self.context.member()?;
        let name = request.into_inner().name;
        member
            .submit(
                &identity,
                Kind::RevokeOperatorToken(pb::RevokeOperatorToken { name: name.clone() }),
            )
            .await?;
        let revoked_at = member.read(|s| {
            s.operator_token(&name)
                .map_or(0, |token| token.revoked_at_unix_ms)
        });
        Ok(Response::new(pb::RevokeTokenResponse {
            name,
            revoked_at_unix_ms: revoked_at,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        caller(&request)?;
        let member = self.context.member()?;
        member.read_barrier(request.get_ref().consistent).await?;
        let tokens = member.read(|s| {
            s.operator_tokens()
                .map(|t| pb::TokenInfo {
                    name: t.name.clone(),
                    issued_at_unix_ms: t.issued_at_unix_ms,
                    revoked_at_unix_ms: t.revoked_at_unix_ms,
                    allow_privileged: t.allow_privileged,
                    issued_by: t.issued_by.clone(),
                })
                .collect()
        });
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unprivileged_token_cannot_mint_a_privileged_one() {
        let plain = Identity::Operator {
            name: "ci".into(),
            allow_privileged: false,
        };
        let error = check_escalation(&plain, true).expect_err("escalation");
        assert_eq!(error.code, Code::PermissionDenied);
        assert!(check_escalation(&plain, false).is_ok());
        assert!(check_escalation(&Identity::Local, true).is_ok());
        let privileged = Identity::Operator {
            name: "admin".into(),
            allow_privileged: true,
        };
        assert!(check_escalation(&privileged, true).is_ok());
    }
}
