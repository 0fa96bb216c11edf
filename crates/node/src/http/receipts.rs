//! `/v1/receipts`: list, export (JSON Lines) and read receipts; and the
//! console's recent decisions.

use api::{Page, ReceiptQuery, ReceiptView, PAGE_ITEMS_MAX};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::calls::barrier;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiQuery, Principal};
use super::inputs::{receipt_filter, receipt_id};
use super::views::{page, receipt_view};
use crate::app_state::AppState;

pub async fn list_receipts(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> ApiResult<Json<Page<ReceiptView>>> {
    let filter = receipt_filter(&principal, q)?;
    barrier(&s).await?;
    let items: Vec<ReceiptView> = s.local().receipts(&filter)?.iter().map(receipt_view).collect();
    Ok(Json(page(items, filter.limit, |r| r.id.clone())))
}

/// Receipts exported in one JSONL response, at most.
const EXPORT_RECEIPTS_MAX: usize = 10_000_000;

/// All matching receipts as JSON Lines, streamed page by page.
pub async fn export_receipts(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReceiptQuery>,
) -> ApiResult<Response> {
    let mut filter = receipt_filter(&principal, ReceiptQuery { limit: None, ..q })?;
    filter.limit = PAGE_ITEMS_MAX as usize;
    barrier(&s).await?;
    let stream = futures::stream::unfold((filter, 0usize, false), move |(mut filter, sent, done)| {
        let s = s.clone();
        async move {
            if done || sent >= EXPORT_RECEIPTS_MAX {
                return None;
            }
            let page = tokio::task::spawn_blocking({
                let filter = filter.clone();
                move || s.local().receipts(&filter)
            })
            .await;
            let page = match page {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return Some((Err(std::io::Error::other(e.to_string())), (filter, sent, true))),
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), (filter, sent, true))),
            };
            let last = page.len() < filter.limit;
            filter.after = page.last().map(|r| r.id).or(filter.after);
            let mut chunk = Vec::new();
            for r in &page {
                if serde_json::to_writer(&mut chunk, &receipt_view(r)).is_err() {
                    return Some((
                        Err(std::io::Error::other("receipt encoding failed")),
                        (filter, sent, true),
                    ));
                }
                chunk.push(b'\n');
            }
            Some((Ok::<_, std::io::Error>(chunk), (filter, sent + page.len(), last)))
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

pub async fn get_receipt(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<ReceiptView>> {
    let rid = receipt_id(&id)?;
    barrier(&s).await?;
    let r = s
        .local()
        .receipt(rid)?
        .ok_or_else(|| ApiError::not_found("unknown_receipt", format!("no receipt {rid}")))?;
    principal.require_session(&r.session_id)?;
    Ok(Json(receipt_view(&r)))
}

pub async fn recent_decisions(State(s): State<AppState>, principal: Principal) -> ApiResult<Response> {
    principal.require_admin()?;
    Ok(Json(s.decisions.recent()).into_response())
}
