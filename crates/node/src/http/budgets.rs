//! `/v1/budgets`: create, update, read and list budgets (admin).

use api::{BudgetView, CreateBudgetRequest, ListQuery, Page, UpdateBudgetRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ledger::{BudgetId, Command, CreateBudget, Outcome, UpdateBudget};

use super::calls::{await_applied, barrier, decide, require_budget};
use super::error::{refusal, ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, Principal};
use super::inputs::{asset_input, budget_id, budget_id_field, cap_input, page_limit, tool_caps_input, tool_set_input};
use super::views::{budget_view, page};
use crate::app_state::AppState;

pub async fn create_budget(
    State(s): State<AppState>,
    principal: Principal,
    ApiJson(req): ApiJson<CreateBudgetRequest>,
) -> ApiResult<Response> {
    principal.require_admin()?;
    let asset = asset_input(req.asset, req.decimals)?;
    let id = budget_id_field("id", req.id)?;
    let parent = req.parent.map(|p| budget_id_field("parent", p)).transpose()?;
    if let Some(p) = &parent {
        require_budget(&s, p).await?;
    }
    let command = Command::CreateBudget(CreateBudget {
        cap: cap_input("cap", &req.cap, &asset)?,
        tool_caps: tool_caps_input(req.tool_caps, &asset)?,
        id: id.clone(),
        asset,
        parent,
        blocked_tools: tool_set_input("blocked_tools", req.blocked_tools)?,
    });
    let d = decide(&s, command).await?;
    let status = match d.outcome {
        Outcome::BudgetCreated { existed: false } => StatusCode::CREATED,
        Outcome::BudgetCreated { existed: true } => StatusCode::OK,
        Outcome::Refused(r) => return Err(refusal(r, None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    };
    await_applied(&s, d.log_index).await?;
    let view = s.local().budget(&id).map(|b| budget_view(&b));
    let view = view.ok_or_else(|| ApiError::Internal("budget missing after creation".into()))?;
    Ok((status, Json(view)).into_response())
}

pub async fn update_budget(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateBudgetRequest>,
) -> ApiResult<Json<BudgetView>> {
    principal.require_admin()?;
    let id = budget_id(&id)?;
    barrier(&s).await?;
    let asset = s
        .local()
        .budget_asset(&id)
        .ok_or_else(|| ApiError::not_found("unknown_budget", format!("no budget {id}")))?;
    let command = Command::UpdateBudget(UpdateBudget {
        id: id.clone(),
        cap: req.cap.map(|c| cap_input("cap", &c, &asset)).transpose()?,
        tool_caps: req.tool_caps.map(|t| tool_caps_input(t, &asset)).transpose()?,
        blocked_tools: req
            .blocked_tools
            .map(|b| tool_set_input("blocked_tools", b))
            .transpose()?,
    });
    let d = decide(&s, command).await?;
    match d.outcome {
        Outcome::BudgetUpdated => {}
        Outcome::Refused(r) => return Err(refusal(r, None)),
        other => return Err(ApiError::Internal(format!("unexpected outcome {other:?}"))),
    }
    await_applied(&s, d.log_index).await?;
    let view = s.local().budget(&id).map(|b| budget_view(&b));
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_budget", "budget gone"))
}

pub async fn get_budget(
    State(s): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetView>> {
    principal.require_admin()?;
    let id = budget_id(&id)?;
    barrier(&s).await?;
    let view = s.local().budget(&id).map(|b| budget_view(&b));
    view.map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_budget", format!("no budget {id}")))
}

pub async fn list_budgets(
    State(s): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<BudgetView>>> {
    principal.require_admin()?;
    let limit = page_limit(q.limit)?;
    let after: Option<BudgetId> = q.after.map(|a| budget_id_field("after", a)).transpose()?;
    barrier(&s).await?;
    let items: Vec<BudgetView> = s
        .local()
        .budgets(after.as_ref(), limit)
        .iter()
        .map(budget_view)
        .collect();
    Ok(Json(page(items, limit, |b| b.id.clone())))
}
