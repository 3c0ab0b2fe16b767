//! ACME material in the replicated state, so that any node can answer a challenge and serve a
//! certificate: certificates (with keys), HTTP-01 challenge answers and ACME accounts.
//!
//! Issuance runs on the leader (`ingress`); this module only stores its results and audits
//! certificate_issued / certificate_renewed / certificate_failed from the stored transitions.
//! Keys never reach an audit payload or a watch event.
//!
//! It must not read clocks, randomness or disks, nor talk to an ACME server.

use crate::error::Error;
use crate::proto::v1::{
    AcmeAccount, AuditEventType, Certificate, CertificateState, ChallengeToken, DeleteCertificate,
    DeleteChallengeToken, PutAcmeAccount, PutCertificate, PutChallengeToken,
    command_result::Outcome,
};

use super::change::{Tx, put, take, take_where};
use super::{State, ack, missing, named, payload, required};

impl State {
    /// The certificate of a domain (key included: not for RPC answers).
    pub fn certificate(&self, domain: &str) -> Option<&Certificate> {
        self.certificates.get(domain)
    }

    /// Every certificate, by domain.
    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.certificates.values()
    }

    /// The HTTP-01 answer for a challenge token.
    pub fn challenge_token(&self, token: &str) -> Option<&ChallengeToken> {
        self.challenge_tokens.get(token)
    }

    /// The ACME account for a (directory, e-mail) (key included).
    pub fn acme_account(&self, directory_url: &str, email: &str) -> Option<&AcmeAccount> {
        self.acme_accounts
            .get(&(directory_url.to_owned(), email.to_owned()))
    }

    pub(super) fn put_certificate(
        &mut self,
        tx: &mut Tx,
        c: &PutCertificate,
    ) -> Result<Outcome, Error> {
        let certificate = c
            .certificate
            .clone()
            .ok_or_else(|| missing("certificate"))?;
        required(&certificate.domain, "certificate.domain")?;
        let state = named::<CertificateState>(certificate.state, "certificate.state")?;
        let old = self.certificates.get(&certificate.domain);
        let audit = match state {
            CertificateState::Issued
                if old.is_none_or(|o| o.cert_chain_pem != certificate.cert_chain_pem) =>
            {
                let had_one = old.is_some_and(|o| !o.cert_chain_pem.is_empty());
                Some(if had_one {
                    AuditEventType::CertificateRenewed
                } else {
                    AuditEventType::CertificateIssued
                })
            }
            CertificateState::Failed
                if old.is_none_or(|o| o.state() != CertificateState::Failed) =>
            {
                Some(AuditEventType::CertificateFailed)
            }
            _ => None,
        };
        let details = payload([
            ("domain", certificate.domain.clone()),
            (
                "not_after_unix_ms",
                certificate.not_after_unix_ms.to_string(),
            ),
            ("code", certificate.last_error_code.clone()),
            ("message", certificate.last_error_message.clone()),
        ]);
        put(
            &mut self.certificates,
            certificate.domain.clone(),
            certificate,
            tx,
        );
        if let Some(event_type) = audit {
            self.audit_push(tx, event_type, details);
        }
        Ok(ack())
    }

    pub(super) fn delete_certificate(
        &mut self,
        tx: &mut Tx,
        c: &DeleteCertificate,
    ) -> Result<Outcome, Error> {
        take(&mut self.certificates, c.domain.as_str(), tx);
        Ok(ack())
    }

    pub(super) fn put_challenge_token(
        &mut self,
        tx: &mut Tx,
        c: &PutChallengeToken,
    ) -> Result<Outcome, Error> {
        let challenge = c.challenge.clone().ok_or_else(|| missing("challenge"))?;
        required(&challenge.token, "challenge.token")?;
        // Answers past their expiry are never asked for again; forget them.
        let now = tx.now;
        take_where(&mut self.challenge_tokens, tx, |_, t| {
            t.expires_at_unix_ms != 0 && t.expires_at_unix_ms <= now
        });
        put(
            &mut self.challenge_tokens,
            challenge.token.clone(),
            challenge,
            tx,
        );
        Ok(ack())
    }

    pub(super) fn delete_challenge_token(
        &mut self,
        tx: &mut Tx,
        c: &DeleteChallengeToken,
    ) -> Result<Outcome, Error> {
        take(&mut self.challenge_tokens, c.token.as_str(), tx);
        Ok(ack())
    }

    pub(super) fn put_acme_account(
        &mut self,
        tx: &mut Tx,
        c: &PutAcmeAccount,
    ) -> Result<Outcome, Error> {
        let mut account = c.account.clone().ok_or_else(|| missing("account"))?;
        required(&account.directory_url, "account.directory_url")?;
        if account.created_at_unix_ms == 0 {
            account.created_at_unix_ms = tx.now;
        }
        let key = (account.directory_url.clone(), account.email.clone());
        put(&mut self.acme_accounts, key, account, tx);
        Ok(ack())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::proto::v1::command::Kind;
    use crate::state::AuditFilter;
    use crate::state::testkit::*;

    fn cert(state: CertificateState, chain: &str) -> Kind {
        Kind::PutCertificate(PutCertificate {
            certificate: Some(Certificate {
                domain: "shop.example".into(),
                state: state.into(),
                cert_chain_pem: chain.into(),
                key_pem: "PRIVATE-KEY-MATERIAL".into(),
                ..Default::default()
            }),
        })
    }

    fn audit_types(h: &Harness) -> Vec<AuditEventType> {
        h.state
            .audit(&AuditFilter::default())
            .events
            .iter()
            .map(|e| e.r#type())
            .filter(|t| t.as_str_name().contains("CERTIFICATE"))
            .collect()
    }

    #[test]
    fn test_certificate_transitions_are_audited_once() {
        let mut h = Harness::initialised();
        h.ok(cert(CertificateState::Pending, ""));
        h.ok(cert(CertificateState::Issued, "chain-1"));
        h.ok(cert(CertificateState::Issued, "chain-1"));
        h.ok(cert(CertificateState::Renewing, "chain-1"));
        h.ok(cert(CertificateState::Issued, "chain-2"));
        h.ok(cert(CertificateState::Failed, "chain-2"));
        h.ok(cert(CertificateState::Failed, "chain-2"));
        assert_eq!(
            audit_types(&h),
            [
                AuditEventType::CertificateIssued,
                AuditEventType::CertificateRenewed,
                AuditEventType::CertificateFailed
            ]
        );
        assert_eq!(
            h.state
                .certificate("shop.example")
                .map(|c| c.key_pem.as_str()),
            Some("PRIVATE-KEY-MATERIAL")
        );
        h.rejected(
            cert(CertificateState::Unspecified, ""),
            Code::ValidationFailed,
        );
        h.rejected(
            Kind::PutCertificate(PutCertificate { certificate: None }),
            Code::ValidationFailed,
        );
        h.ok(Kind::DeleteCertificate(DeleteCertificate {
            domain: "shop.example".into(),
        }));
        assert_eq!(h.state.certificates().count(), 0);
    }

    #[test]
    fn test_challenge_tokens_expire_and_delete() {
        let mut h = Harness::initialised();
        let put = |token: &str, expires: i64| {
            Kind::PutChallengeToken(PutChallengeToken {
                challenge: Some(ChallengeToken {
                    token: token.into(),
                    key_authorization: format!("{token}.thumb"),
                    domain: "shop.example".into(),
                    expires_at_unix_ms: expires,
                }),
            })
        };
        h.ok(put("t1", h.now + 10));
        h.now += 10;
        h.ok(put("t2", h.now + 10));
        assert!(
            h.state.challenge_token("t1").is_none(),
            "expired answer dropped"
        );
        assert_eq!(
            h.state
                .challenge_token("t2")
                .map(|t| t.key_authorization.as_str()),
            Some("t2.thumb")
        );
        h.ok(Kind::DeleteChallengeToken(DeleteChallengeToken {
            token: "t2".into(),
        }));
        assert!(h.state.challenge_token("t2").is_none());
        h.rejected(put("", 0), Code::ValidationFailed);
    }

    #[test]
    fn test_acme_accounts_are_stored_by_directory_and_email() {
        let mut h = Harness::initialised();
        let account = AcmeAccount {
            directory_url: "https://acme.test/dir".into(),
            email: "ops@example.com".into(),
            key_pem: "KEY".into(),
            account_url: "https://acme.test/acct/1".into(),
            created_at_unix_ms: 0,
        };
        h.ok(Kind::PutAcmeAccount(PutAcmeAccount {
            account: Some(account),
        }));
        let stored = h
            .state
            .acme_account("https://acme.test/dir", "ops@example.com")
            .expect("stored");
        assert_eq!(stored.created_at_unix_ms, h.now);
        h.rejected(
            Kind::PutAcmeAccount(PutAcmeAccount { account: None }),
            Code::ValidationFailed,
        );
        h.rejected(
            Kind::PutAcmeAccount(PutAcmeAccount {
                account: Some(AcmeAccount::default()),
            }),
            Code::ValidationFailed,
        );
    }
}
