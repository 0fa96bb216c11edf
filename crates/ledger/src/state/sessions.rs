//! Applying session commands: create, revoke, rotate the token.

use crate::command::*;
use crate::ids::*;
use crate::model::*;
use crate::outcome::*;
use crate::records::RecordKey;

use super::Ledger;

impl Ledger {
    pub(super) fn create_session(&mut self, c: &CreateSession) -> Outcome {
        if let Some(existing) = self.sessions.get(&c.id) {
            // A retry of the same creation, with the same token: report the
            // session as it is (the caller's token works). The same id with
            // another token is a different creation: refused, so no caller
            // is ever told "created" while holding a token that does not
            // work.
            let same = existing.token_hash == c.token_hash
                && existing.asset == c.asset
                && existing.limit.cap == c.cap
                && existing.budget == c.budget
                && existing.agent_id == c.agent_id
                && existing.wallet_address == c.wallet_address
                && CapUsage::same_caps(&existing.tool_caps, &c.tool_caps)
                && existing.tools == c.tools
                && existing.live_holds_max == c.live_holds_limit();
            return if same {
                Outcome::SessionCreated {
                    existed: true,
                    expires_at_ms: existing.expires_at_ms,
                }
            } else {
                Outcome::Refused(Refusal::AlreadyExists)
            };
        }
        if self.by_token.contains_key(&c.token_hash) {
            // Tokens are 256-bit random; a repeat means a broken generator.
            return Outcome::Refused(Refusal::AlreadyExists);
        }
        if let Some(budget_id) = &c.budget {
            if let Err(refused) = self.budget_in(budget_id, &c.asset) {
                return refused;
            }
        }
        let now = self.meta.now_ms;
        let expires_at_ms = now.saturating_add(c.ttl_ms);
        let session = Session {
            id: c.id.clone(),
            token_hash: c.token_hash,
            asset: c.asset.clone(),
            limit: CapUsage::new(c.cap),
            tool_caps: CapUsage::per_tool(&c.tool_caps),
            budget: c.budget.clone(),
            agent_id: c.agent_id.clone(),
            wallet_address: c.wallet_address.clone(),
            created_at_ms: now,
            expires_at_ms,
            revoked: false,
            tools: c.tools.clone(),
            live_holds_max: c.live_holds_limit(),
        };
        self.by_token.insert(c.token_hash, c.id.clone());
        self.sessions.insert(c.id.clone(), session);
        self.changes.dirty.insert(RecordKey::Session(c.id.clone()));
        Outcome::SessionCreated {
            existed: false,
            expires_at_ms,
        }
    }

    pub(super) fn revoke_session(&mut self, id: &SessionId) -> Outcome {
        let Some(session) = self.sessions.get_mut(id) else {
            return Outcome::Refused(Refusal::UnknownSession);
        };
        let already = session.revoked;
        session.revoked = true;
        self.changes.dirty.insert(RecordKey::Session(id.clone()));
        Outcome::SessionRevoked { already }
    }

    pub(super) fn rotate_token(&mut self, id: &SessionId, token_hash: TokenHash) -> Outcome {
        if self.by_token.contains_key(&token_hash) {
            return Outcome::Refused(Refusal::AlreadyExists);
        }
        let Some(session) = self.sessions.get_mut(id) else {
            return Outcome::Refused(Refusal::UnknownSession);
        };
        self.by_token.remove(&session.token_hash);
        session.token_hash = token_hash;
        self.by_token.insert(token_hash, id.clone());
        self.changes.dirty.insert(RecordKey::Session(id.clone()));
        Outcome::TokenRotated
    }
}
