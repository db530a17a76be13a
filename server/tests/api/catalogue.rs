//! The catalogue: create, update, delete, read by id and list videos, with
//! visibility enforced on every read path, and the storage quota on `me`.

use std::collections::{BTreeSet, HashSet};

use chrono::{TimeZone, Utc};
use entities::{job, rendition, upload, video, JobKind, JobStatus, Role};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use reelhouse::auth::principal::{AuthMethod, Principal};
use reelhouse::events::bus::{BusMessage, Subscribe};
use reelhouse::events::EventKind;
use reelhouse::repo::videos as access;

use crate::helpers::{error_code, spawn_app, spawn_app_with, Credentials, TestApp, TestUser};

const VIDEO_FIELDS: &str = "id title description tags visibility status owner { id } createdAt updatedAt";

const CREATE: &str = "mutation($input: CreateVideoInput!) { createVideo(input: $input) { \
    id title description tags visibility status owner { id } createdAt updatedAt } }";
const UPDATE: &str = "mutation($id: ID!, $input: UpdateVideoInput!) { updateVideo(id: $id, input: $input) { \
    id title description tags visibility status owner { id } createdAt updatedAt } }";
const DELETE: &str = "mutation($id: ID!) { deleteVideo(id: $id) }";
const GET: &str = "query($id: ID!) { video(id: $id) { id title visibility } }";
const LIST: &str = "query($first: Int, $after: String, $filter: VideoFilter) { videos(first: $first, after: $after, filter: $filter) { \
    edges { cursor node { id title } } pageInfo { hasNextPage endCursor } } }";

async fn create_video(app: &TestApp, user: &TestUser, input: Value) -> Value {
    let (status, body) = app.graphql_as(&user.bearer(), CREATE, json!({ "input": input })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["createVideo"].clone()
}

async fn create_titled(app: &TestApp, user: &TestUser, title: &str, visibility: &str) -> Uuid {
    let video = create_video(app, user, json!({ "title": title, "visibility": visibility })).await;
    video_id(&video)
}

fn video_id(video: &Value) -> Uuid {
    Uuid::parse_str(video["id"].as_str().unwrap_or_else(|| panic!("no id in {video}"))).unwrap()
}

/// `video(id)` as `who`: the id when it is returned, None when null. Fails on errors.
async fn get_video(app: &TestApp, who: &Credentials, id: Uuid) -> Option<Uuid> {
    let (status, body) = app.graphql_as(who, GET, json!({ "id": id.to_string() })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let video = &body["data"]["video"];
    if video.is_null() {
        None
    } else {
        Some(video_id(video))
    }
}

/// One page of `videos`: (ids in order, cursors, hasNextPage, endCursor).
async fn list_page(
    app: &TestApp,
    who: &Credentials,
    first: Option<i32>,
    after: Option<&str>,
    filter: Value,
) -> (Vec<Uuid>, Vec<String>, bool, Option<String>) {
    let (status, body) = app.graphql_as(who, LIST, json!({ "first": first, "after": after, "filter": filter })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let connection = &body["data"]["videos"];
    let edges = connection["edges"].as_array().unwrap();
    let ids = edges.iter().map(|e| video_id(&e["node"])).collect();
    let cursors = edges.iter().map(|e| e["cursor"].as_str().unwrap().to_string()).collect();
    let has_next = connection["pageInfo"]["hasNextPage"].as_bool().unwrap();
    let end = connection["pageInfo"]["endCursor"].as_str().map(str::to_string);
    (ids, cursors, has_next, end)
}

/// Every id `videos(filter)` returns to `who` (one page of 100 is enough here).
async fn listed(app: &TestApp, who: &Credentials, filter: Value) -> BTreeSet<Uuid> {
    let (ids, _, has_next, _) = list_page(app, who, Some(100), None, filter).await;
    assert!(!has_next);
    ids.into_iter().collect()
}

async fn list_error(app: &TestApp, who: &Credentials, variables: Value) -> Option<String> {
    let (_, body) = app.graphql_as(who, LIST, variables).await;
    assert!(body["data"].is_null() || body["data"]["videos"].is_null(), "{body}");
    error_code(&body)
}

async fn set_created_at(app: &TestApp, id: Uuid, at: chrono::DateTime<Utc>) {
    video::Entity::update_many()
        .col_expr(video::Column::CreatedAt, Expr::value(at))
        .filter(video::Column::Id.eq(id))
        .exec(&app.state.db)
        .await
        .unwrap();
}

async fn load_video(app: &TestApp, id: Uuid) -> video::Model {
    video::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap()
}

#[actix_web::test]
async fn video_is_created_updated_and_deleted() {
    let app = spawn_app().await;
    let owner = app.register_user().await;

    let created = create_video(
        &app,
        &owner,
        json!({ "title": "  Holiday in Lisbon  ", "description": "Trams\nand tiles", "tags": [" Travel", "travel", "PORTUGAL"] }),
    )
    .await;
    assert_eq!(created["title"], "Holiday in Lisbon", "trimmed: {created}");
    assert_eq!(created["description"], "Trams\nand tiles");
    assert_eq!(created["tags"], json!(["travel", "portugal"]), "lowercased, deduplicated: {created}");
    assert_eq!(created["visibility"], "PRIVATE", "private by default");
    assert_eq!(created["status"], "DRAFT");
    assert_eq!(created["owner"]["id"], owner.id.as_str());
    let id = video_id(&created);

    let (status, body) = app
        .graphql_as(
            &owner.bearer(),
            UPDATE,
            json!({ "id": id.to_string(), "input": { "title": "Lisbon", "visibility": "PUBLIC", "tags": [] } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let updated = &body["data"]["updateVideo"];
    assert_eq!(updated["title"], "Lisbon", "{body}");
    assert_eq!(updated["visibility"], "PUBLIC");
    assert_eq!(updated["tags"], json!([]));
    assert_eq!(updated["description"], "Trams\nand tiles", "fields left out stay as they are");
    assert_eq!(updated["createdAt"], created["createdAt"]);

    let (_, body) = app
        .graphql_as(
            &Credentials::Anonymous,
            &format!("query($id: ID!) {{ video(id: $id) {{ {VIDEO_FIELDS} }} }}"),
            json!({ "id": id.to_string() }),
        )
        .await;
    assert_eq!(body["data"]["video"]["title"], "Lisbon", "public now, readable anonymously: {body}");

    let (status, body) = app.graphql_as(&owner.bearer(), DELETE, json!({ "id": id.to_string() })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    assert_eq!(get_video(&app, &owner.bearer(), id).await, None, "gone for its owner");
    assert!(listed(&app, &owner.bearer(), json!(null)).await.is_empty());
    assert!(load_video(&app, id).await.deleted_at.is_some(), "soft-deleted until its objects are removed");

    let (_, body) = app.graphql_as(&owner.bearer(), DELETE, json!({ "id": id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "deleting twice: {body}");
    let (_, body) =
        app.graphql_as(&owner.bearer(), UPDATE, json!({ "id": id.to_string(), "input": { "title": "x" } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
}

#[actix_web::test]
async fn invalid_input_is_refused_with_bad_user_input() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let many_tags: Vec<String> = (0..21).map(|i| format!("tag{i}")).collect();
    let refused = [
        ("blank title", json!({ "title": "   " })),
        ("long title", json!({ "title": "x".repeat(201) })),
        ("control character", json!({ "title": "bell\u{7}" })),
        ("long description", json!({ "title": "ok", "description": "d".repeat(5001) })),
        ("21 tags", json!({ "title": "ok", "tags": many_tags })),
        ("long tag", json!({ "title": "ok", "tags": ["t".repeat(41)] })),
        ("empty tag", json!({ "title": "ok", "tags": ["  "] })),
        ("quote in tag", json!({ "title": "ok", "tags": ["say \"hi\""] })),
    ];
    for (case, input) in refused {
        let (status, body) = app.graphql_as(&owner.bearer(), CREATE, json!({ "input": input })).await;
        assert_eq!(status, 200, "{case}: {body}");
        assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{case}: {body}");
        assert!(!body["errors"][0]["message"].as_str().unwrap().is_empty(), "{case}: a message says why");
    }
    assert_eq!(video::Entity::find().all(&app.state.db).await.unwrap().len(), 0, "nothing refused was stored");

    // The limits themselves are accepted; duplicates are dropped before counting.
    let mut twenty: Vec<String> = (0..20).map(|i| format!("Tag{i}")).collect();
    twenty.push("tag0".into());
    let created = create_video(
        &app,
        &owner,
        json!({ "title": "é".repeat(200), "description": "d".repeat(5000), "tags": twenty }),
    )
    .await;
    assert_eq!(created["tags"].as_array().unwrap().len(), 20);
    let id = video_id(&created);

    let (_, body) =
        app.graphql_as(&owner.bearer(), UPDATE, json!({ "id": id.to_string(), "input": { "title": "" } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    assert_eq!(load_video(&app, id).await.title, "é".repeat(200), "a refused update changes nothing");

    for (query, variables) in [
        (GET, json!({ "id": "not-a-uuid" })),
        (DELETE, json!({ "id": "not-a-uuid" })),
        (UPDATE, json!({ "id": "not-a-uuid", "input": { "title": "x" } })),
    ] {
        let (_, body) = app.graphql_as(&owner.bearer(), query, variables).await;
        assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{query}: {body}");
    }
    let who = owner.bearer();
    for variables in [
        json!({ "first": 101 }),
        json!({ "first": -1 }),
        json!({ "after": "bm90LWEtY3Vyc29y" }),
        json!({ "after": "%%%" }),
        json!({ "filter": { "ownerId": "nope" } }),
        json!({ "filter": { "tag": "a\"b" } }),
        json!({ "filter": { "search": "s".repeat(201) } }),
    ] {
        assert_eq!(list_error(&app, &who, variables.clone()).await.as_deref(), Some("BAD_USER_INPUT"), "{variables}");
    }
    assert_eq!(
        list_error(&app, &Credentials::Anonymous, json!({ "filter": { "mine": true } })).await.as_deref(),
        Some("UNAUTHENTICATED")
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Viewer {
    Owner,
    Stranger,
    Moderator,
    Admin,
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Unlisted,
    Private,
    /// PUBLIC, hidden by a moderator.
    HiddenPublic,
}

fn principal(user: &TestUser, role: Role) -> Option<Principal> {
    Some(Principal {
        user_id: Uuid::parse_str(&user.id).unwrap(),
        role,
        method: AuthMethod::AccessToken,
        family_id: None,
        api_key_id: None,
    })
}

#[actix_web::test]
async fn visibility_matrix_holds_for_video_by_id_and_for_listings() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    let admin = app.create_user_with_role(Role::Admin).await;

    let mut videos = Vec::new();
    for (kind, visibility) in [
        (Kind::Public, "PUBLIC"),
        (Kind::Unlisted, "UNLISTED"),
        (Kind::Private, "PRIVATE"),
        (Kind::HiddenPublic, "PUBLIC"),
    ] {
        videos.push((kind, create_titled(&app, &owner, &format!("{kind:?}"), visibility).await));
    }
    let hidden = videos[3].1;
    video::Entity::update_many()
        .col_expr(video::Column::HiddenAt, Expr::value(Utc::now()))
        .filter(video::Column::Id.eq(hidden))
        .exec(&app.state.db)
        .await
        .unwrap();
    // A deleted video is seen by nobody, whatever its visibility.
    let deleted = create_titled(&app, &owner, "deleted", "PUBLIC").await;
    let (_, body) = app.graphql_as(&owner.bearer(), DELETE, json!({ "id": deleted.to_string() })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");

    // (viewer, kind) -> (readable by id, listed)
    let expected = |viewer: Viewer, kind: Kind| -> (bool, bool) {
        match (viewer, kind) {
            (Viewer::Owner | Viewer::Moderator | Viewer::Admin, _) => (true, true),
            (Viewer::Stranger | Viewer::Anonymous, Kind::Public) => (true, true),
            (Viewer::Stranger | Viewer::Anonymous, Kind::Unlisted) => (true, false),
            (Viewer::Stranger | Viewer::Anonymous, Kind::Private | Kind::HiddenPublic) => (false, false),
        }
    };
    let viewers = [
        (Viewer::Owner, owner.bearer(), principal(&owner, Role::User)),
        (Viewer::Stranger, stranger.bearer(), principal(&stranger, Role::User)),
        (Viewer::Moderator, moderator.bearer(), principal(&moderator, Role::Moderator)),
        (Viewer::Admin, admin.bearer(), principal(&admin, Role::Admin)),
        (Viewer::Anonymous, Credentials::Anonymous, None),
    ];
    let mut checked = 0;
    for (viewer, credentials, as_principal) in &viewers {
        let in_list = listed(&app, credentials, json!(null)).await;
        let by_owner = listed(&app, credentials, json!({ "ownerId": owner.id })).await;
        assert_eq!(in_list, by_owner, "{viewer:?}: the owner filter narrows, never widens");
        let mut expected_list = BTreeSet::new();
        for (kind, id) in &videos {
            let (readable, listable) = expected(*viewer, *kind);
            let got = get_video(&app, credentials, *id).await;
            assert_eq!(got.is_some(), readable, "{viewer:?} reading {kind:?} by id");
            assert_eq!(in_list.contains(id), listable, "{viewer:?} listing {kind:?}");
            // The SQL of listings and the Rust rules agree.
            let row = load_video(&app, *id).await;
            assert_eq!(access::can_read_by_id(as_principal.as_ref(), &row), readable, "{viewer:?} {kind:?}");
            assert_eq!(access::can_list(as_principal.as_ref(), &row), listable, "{viewer:?} {kind:?}");
            if listable {
                expected_list.insert(*id);
            }
            checked += 1;
        }
        assert_eq!(in_list, expected_list, "{viewer:?}: exactly the expected videos are listed");
        assert_eq!(get_video(&app, credentials, deleted).await, None, "{viewer:?} reading a deleted video");
        assert_eq!(get_video(&app, credentials, Uuid::now_v7()).await, None, "{viewer:?} reading a missing video");
        // Asking for a visibility does not get around the rules.
        let private = listed(&app, credentials, json!({ "visibility": "PRIVATE" })).await;
        assert_eq!(private.contains(&videos[2].1), expected(*viewer, Kind::Private).1, "{viewer:?}");
        let unlisted = listed(&app, credentials, json!({ "visibility": "UNLISTED" })).await;
        assert_eq!(unlisted.contains(&videos[1].1), expected(*viewer, Kind::Unlisted).1, "{viewer:?}");
    }
    assert_eq!(checked, 20);
}

#[actix_web::test]
async fn only_owners_change_a_video_and_staff_delete_it() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let stranger = app.register_user().await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let public = create_titled(&app, &owner, "public", "PUBLIC").await;
    let unlisted = create_titled(&app, &owner, "unlisted", "UNLISTED").await;
    let private = create_titled(&app, &owner, "private", "PRIVATE").await;

    for (id, code) in [(private, "NOT_FOUND"), (public, "FORBIDDEN"), (unlisted, "FORBIDDEN")] {
        let (_, body) = app
            .graphql_as(&stranger.bearer(), UPDATE, json!({ "id": id.to_string(), "input": { "title": "mine now" } }))
            .await;
        assert_eq!(error_code(&body).as_deref(), Some(code), "stranger updating: {body}");
        let (_, body) = app.graphql_as(&stranger.bearer(), DELETE, json!({ "id": id.to_string() })).await;
        assert_eq!(error_code(&body).as_deref(), Some(code), "stranger deleting: {body}");
        let (_, body) = app.graphql_as(&Credentials::Anonymous, DELETE, json!({ "id": id.to_string() })).await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    }
    for id in [public, unlisted, private] {
        let stored = load_video(&app, id).await;
        assert!(stored.deleted_at.is_none() && stored.title != "mine now", "a refused change changes nothing");
    }

    let (_, body) = app.graphql_as(&moderator.bearer(), DELETE, json!({ "id": public.to_string() })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    let (_, body) = app.graphql_as(&admin.bearer(), DELETE, json!({ "id": private.to_string() })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");

    // A VIEWER may not create, nor change a video it owns.
    let viewer = app.create_user_with_role(Role::Viewer).await;
    let (_, body) = app.graphql_as(&viewer.bearer(), CREATE, json!({ "input": { "title": "no" } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let (_, body) = app.graphql_as(&Credentials::Anonymous, CREATE, json!({ "input": { "title": "no" } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let own = reelhouse::repo::videos::create_video(
        &app.state.db,
        reelhouse::repo::videos::NewVideo {
            owner_id: Uuid::parse_str(&viewer.id).unwrap(),
            title: "from before a demotion".into(),
            description: String::new(),
            tags: vec![],
            visibility: entities::Visibility::Private,
        },
    )
    .await
    .unwrap();
    assert_eq!(get_video(&app, &viewer.bearer(), own.id).await, Some(own.id), "a viewer reads its own video");
    let (_, body) =
        app.graphql_as(&viewer.bearer(), UPDATE, json!({ "id": own.id.to_string(), "input": { "title": "x" } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
}

#[actix_web::test]
async fn pagination_walks_every_video_once_in_a_stable_order() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let mut created = HashSet::new();
    for i in 0..25 {
        created.insert(create_titled(&app, &owner, &format!("video {i}"), "PUBLIC").await);
    }
    // Ties on created_at are broken by id: give eight videos the same instant.
    let tie = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    for id in created.iter().take(8) {
        set_created_at(&app, *id, tie).await;
    }
    for who in [Credentials::Anonymous, owner.bearer()] {
        // The order, computed here rather than by the database: newest first, ties by id.
        let mut rows = video::Entity::find().all(&app.state.db).await.unwrap();
        rows.sort_by_key(|v| std::cmp::Reverse((v.created_at, v.id)));
        let expected: Vec<Uuid> = rows.into_iter().map(|v| v.id).collect();
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = Vec::new();
        loop {
            let (ids, cursors, has_next, end) = list_page(&app, &who, Some(10), after.as_deref(), json!(null)).await;
            assert_eq!(end.as_ref(), cursors.last(), "endCursor is the last edge's cursor");
            pages.push((ids.len(), has_next));
            walked.extend(ids);
            if !has_next {
                break;
            }
            after = end;
            if pages.len() == 1 {
                // A video created mid-walk is newer than the cursor: it does not shift later pages.
                create_titled(&app, &owner, "late arrival", "PUBLIC").await;
            }
        }
        let last = expected.len() - 20;
        assert_eq!(pages, vec![(10, true), (10, true), (last, false)], "{who:?}");
        assert_eq!(walked, expected, "{who:?}: every video once, created_at DESC, id DESC");
    }
    let (ids, _, has_next, _) = list_page(&app, &Credentials::Anonymous, None, None, json!(null)).await;
    assert_eq!((ids.len(), has_next), (20, true), "first defaults to 20");
    let (ids, _, _, _) = list_page(&app, &Credentials::Anonymous, Some(100), None, json!(null)).await;
    assert_eq!(ids.len(), 27, "first may be 100");
}

#[actix_web::test]
async fn filters_select_by_tag_search_status_visibility_and_owner() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let other = app.register_user().await;
    let cats = create_video(
        &app,
        &owner,
        json!({ "title": "Cats at play", "tags": ["cats", "pets"], "visibility": "PUBLIC" }),
    )
    .await;
    let cats = video_id(&cats);
    let pure = create_video(
        &app,
        &owner,
        json!({ "title": "100% PURE dogs", "tags": ["dogs", "Pets"], "visibility": "PUBLIC" }),
    )
    .await;
    let pure = video_id(&pure);
    let percent = create_video(
        &app,
        &owner,
        json!({ "title": "100 percent", "tags": ["bobcats", "cats_dogs"], "visibility": "PUBLIC" }),
    )
    .await;
    let percent = video_id(&percent);
    let underscore =
        create_video(&app, &other, json!({ "title": "a_b", "tags": ["100%"], "visibility": "PUBLIC" })).await;
    let underscore = video_id(&underscore);
    let axb = create_titled(&app, &other, "axb", "PUBLIC").await;
    let secret = create_video(&app, &owner, json!({ "title": "secret cats", "tags": ["cats"] })).await;
    let secret = video_id(&secret);
    video::Entity::update_many()
        .col_expr(video::Column::Status, Expr::value(sea_orm::ActiveEnum::to_value(&entities::VideoStatus::Ready)))
        .filter(video::Column::Id.is_in([pure, axb]))
        .exec(&app.state.db)
        .await
        .unwrap();

    let anon = Credentials::Anonymous;
    let set = |ids: &[Uuid]| ids.iter().copied().collect::<BTreeSet<_>>();
    // Tags match whole tags, after normalizing, not substrings.
    assert_eq!(listed(&app, &anon, json!({ "tag": " CATS " })).await, set(&[cats]));
    assert_eq!(listed(&app, &owner.bearer(), json!({ "tag": "cats" })).await, set(&[cats, secret]));
    assert_eq!(listed(&app, &anon, json!({ "tag": "pets" })).await, set(&[cats, pure]));
    assert_eq!(listed(&app, &anon, json!({ "tag": "cats_dogs" })).await, set(&[percent]));
    assert_eq!(listed(&app, &anon, json!({ "tag": "100%" })).await, set(&[underscore]));
    assert_eq!(listed(&app, &anon, json!({ "tag": "cat" })).await, set(&[]));
    // Search: case-insensitive substring; `%` and `_` match only themselves.
    assert_eq!(listed(&app, &anon, json!({ "search": "100%" })).await, set(&[pure]));
    assert_eq!(listed(&app, &anon, json!({ "search": "pure" })).await, set(&[pure]));
    assert_eq!(listed(&app, &anon, json!({ "search": "100" })).await, set(&[pure, percent]));
    assert_eq!(listed(&app, &anon, json!({ "search": "a_b" })).await, set(&[underscore]));
    assert_eq!(listed(&app, &anon, json!({ "search": "CATS" })).await, set(&[cats]));
    assert_eq!(listed(&app, &owner.bearer(), json!({ "search": "cats" })).await, set(&[cats, secret]));
    // Status, visibility, owner, mine, and combinations.
    assert_eq!(listed(&app, &anon, json!({ "status": "READY" })).await, set(&[pure, axb]));
    assert_eq!(listed(&app, &anon, json!({ "status": "DRAFT", "tag": "pets" })).await, set(&[cats]));
    assert_eq!(listed(&app, &owner.bearer(), json!({ "visibility": "PRIVATE" })).await, set(&[secret]));
    assert_eq!(listed(&app, &anon, json!({ "ownerId": other.id })).await, set(&[underscore, axb]));
    assert_eq!(listed(&app, &owner.bearer(), json!({ "mine": true })).await, set(&[cats, pure, percent, secret]));
    assert_eq!(listed(&app, &other.bearer(), json!({ "mine": true })).await, set(&[underscore, axb]));
    assert_eq!(listed(&app, &other.bearer(), json!({ "mine": true, "ownerId": owner.id })).await, set(&[]));
    assert_eq!(listed(&app, &anon, json!({ "mine": false })).await.len(), 5, "mine: false does not narrow");
}

#[actix_web::test]
async fn deleting_a_video_records_deleted_stops_its_work_and_queues_object_removal() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let id = create_titled(&app, &owner, "to delete", "PUBLIC").await;
    let owner_id = Uuid::parse_str(&owner.id).unwrap();
    let db = &app.state.db;
    let now = Utc::now();
    let open_upload = upload::ActiveModel {
        id: Set(Uuid::now_v7()),
        video_id: Set(id),
        user_id: Set(owner_id),
        method: Set(entities::UploadMethod::Tus),
        status: Set(entities::UploadStatus::Open),
        filename: Set("clip.mp4".into()),
        content_type: Set("video/mp4".into()),
        declared_size: Set(1000),
        checksum_sha256: Set(None),
        offset_bytes: Set(10),
        object_key: Set(reelhouse::storage::layout::source(owner_id, id)),
        s3_upload_id: Set(None),
        parts: Set(None),
        expires_at: Set(now + chrono::Duration::hours(1)),
        failure_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        completed_at: Set(None),
        staging_swept_at: Set(None),
    }
    .insert(db)
    .await
    .unwrap();
    let new_transcode = || reelhouse::jobs::NewJob {
        kind: JobKind::Transcode,
        video_id: Some(id),
        owner_id: Some(owner_id),
        priority: 0,
        payload: json!({}),
        max_attempts: 3,
    };
    let queued = reelhouse::jobs::enqueue(db, new_transcode()).await.unwrap();
    let running = reelhouse::jobs::enqueue(db, new_transcode()).await.unwrap();
    let mut active: job::ActiveModel = running.clone().into();
    active.status = Set(JobStatus::Running);
    active.update(db).await.unwrap();

    let mut bus = app.state.hubs.event_bus.addr().send(Subscribe).await.unwrap();
    let (_, body) = app.graphql_as(&owner.bearer(), DELETE, json!({ "id": id.to_string() })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    // Published on the bus too, once committed (heartbeats pass by in between).
    let published = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let BusMessage::Video(event) = bus.recv().await.unwrap() {
                return event;
            }
        }
    })
    .await
    .expect("DELETED is published");
    assert_eq!((published.kind, published.video_id), (EventKind::Deleted, id));

    let events = entities::event_outbox::Entity::find()
        .filter(entities::event_outbox::Column::VideoId.eq(id))
        .all(db)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "DELETED");
    assert_eq!(events[0].owner_id, owner_id);
    assert_eq!(events[0].payload["kind"], "DELETED");
    assert_eq!(published.cursor, Some(events[0].id), "the published event is the stored one");

    let cleanup = job::Entity::find().filter(job::Column::Kind.eq(JobKind::DeleteObjects)).all(db).await.unwrap();
    assert_eq!(cleanup.len(), 1, "{cleanup:?}");
    assert_eq!(cleanup[0].status, JobStatus::Queued);
    assert_eq!(cleanup[0].video_id, Some(id));
    assert_eq!(cleanup[0].payload, json!({ "prefix": format!("users/{owner_id}/videos/{id}/") }));
    assert!(cleanup[0].max_attempts > 1, "removal is retried");

    let queued = job::Entity::find_by_id(queued.id).one(db).await.unwrap().unwrap();
    assert_eq!(queued.status, JobStatus::Cancelled);
    assert!(queued.cancel_requested && queued.finished_at.is_some());
    let running = job::Entity::find_by_id(running.id).one(db).await.unwrap().unwrap();
    assert_eq!(running.status, JobStatus::Running, "its worker finishes it");
    assert!(running.cancel_requested);
    let upload = upload::Entity::find_by_id(open_upload.id).one(db).await.unwrap().unwrap();
    assert_eq!(upload.status, entities::UploadStatus::Aborted);
    assert_eq!(upload.failure_reason.as_deref(), Some("video deleted"));

    // A second delete changes nothing: no second event, no second cleanup job.
    let (_, body) = app.graphql_as(&owner.bearer(), DELETE, json!({ "id": id.to_string() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"));
    let events = entities::event_outbox::Entity::find().all(db).await.unwrap();
    assert_eq!(events.len(), 1);
    let jobs = job::Entity::find().filter(job::Column::Kind.eq(JobKind::DeleteObjects)).all(db).await.unwrap();
    assert_eq!(jobs.len(), 1);
}

const ME_STORAGE: &str = "{ me { id storageUsedBytes storageQuotaBytes } }";

#[actix_web::test]
async fn me_reports_storage_used_and_the_quota() {
    let app = spawn_app_with(|settings| settings.uploads.quota_bytes_per_user = 5_000_000_000).await;
    let owner = app.register_user().await;
    let (_, body) = app.graphql_as(&owner.bearer(), ME_STORAGE, json!({})).await;
    assert_eq!(body["data"]["me"]["storageUsedBytes"], 0, "{body}");
    assert_eq!(body["data"]["me"]["storageQuotaBytes"], 5_000_000_000_i64, "{body}");

    let kept = create_titled(&app, &owner, "kept", "PRIVATE").await;
    let removed = create_titled(&app, &owner, "removed", "PRIVATE").await;
    for (id, size) in [(kept, 3_000_000_000_i64), (removed, 700)] {
        video::Entity::update_many()
            .col_expr(video::Column::SourceSizeBytes, Expr::value(size))
            .filter(video::Column::Id.eq(id))
            .exec(&app.state.db)
            .await
            .unwrap();
    }
    let (_, body) = app.graphql_as(&owner.bearer(), ME_STORAGE, json!({})).await;
    assert_eq!(body["data"]["me"]["storageUsedBytes"], 3_000_000_700_i64, "above 2^31: {body}");

    let (_, body) = app.graphql_as(&owner.bearer(), DELETE, json!({ "id": removed.to_string() })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    let (_, body) = app.graphql_as(&owner.bearer(), ME_STORAGE, json!({})).await;
    assert_eq!(body["data"]["me"]["storageUsedBytes"], 3_000_000_000_i64, "deleted videos do not count: {body}");

    let other = app.register_user().await;
    let (_, body) = app.graphql_as(&other.bearer(), ME_STORAGE, json!({})).await;
    assert_eq!(body["data"]["me"]["storageUsedBytes"], 0, "each user has their own: {body}");

    let unlimited = spawn_app_with(|settings| settings.uploads.quota_bytes_per_user = 0).await;
    let user = unlimited.register_user().await;
    let (_, body) = unlimited.graphql_as(&user.bearer(), ME_STORAGE, json!({})).await;
    assert!(body["data"]["me"]["storageQuotaBytes"].is_null(), "0 means no quota: {body}");
}

/// Rendition rows for video `id`: (name, height, status).
async fn add_renditions(
    db: &sea_orm::DatabaseConnection,
    id: Uuid,
    renditions: &[(&str, i32, entities::RenditionStatus)],
) {
    let now = Utc::now();
    for &(name, height, status) in renditions {
        rendition::ActiveModel {
            id: Set(Uuid::now_v7()),
            video_id: Set(id),
            name: Set(name.into()),
            width: Set(height * 16 / 9),
            height: Set(height),
            bitrate: Set(i64::from(height) * 4000),
            codecs: Set("avc1.64001f,mp4a.40.2".into()),
            playlist_key: Set(format!("hls/{name}/index.m3u8")),
            status: Set(status),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(db)
        .await
        .unwrap();
    }
}

/// A RUNNING transcode job of video `id` that reported `percent` (encoding, 120 fps, 8 s left).
async fn running_job(db: &sea_orm::DatabaseConnection, owner: &TestUser, id: Uuid, percent: f64) {
    let job = reelhouse::jobs::enqueue(
        db,
        reelhouse::jobs::NewJob {
            kind: JobKind::Transcode,
            video_id: Some(id),
            owner_id: Some(Uuid::parse_str(&owner.id).unwrap()),
            priority: 0,
            payload: json!({}),
            max_attempts: 3,
        },
    )
    .await
    .unwrap();
    let progress = reelhouse::events::ProgressInfo {
        percent,
        stage: "encoding".into(),
        fps: Some(120.0),
        eta_seconds: Some(8.0),
        renditions: vec![],
    };
    let mut active: job::ActiveModel = job.into();
    active.status = Set(JobStatus::Running);
    active.progress = Set(Some(serde_json::to_value(&progress).unwrap()));
    active.update(db).await.unwrap();
}

#[actix_web::test]
async fn video_shows_ready_renditions_and_the_running_job_progress() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let id = create_titled(&app, &owner, "processing", "PUBLIC").await;
    let db = &app.state.db;
    add_renditions(
        db,
        id,
        &[
            ("360p", 360, entities::RenditionStatus::Ready),
            ("1080p", 1080, entities::RenditionStatus::Pending),
            ("720p", 720, entities::RenditionStatus::Ready),
        ],
    )
    .await;
    const QUERY: &str = "query($id: ID!) { video(id: $id) { renditions { name width height bitrate playlistUrl } \
        thumbnailUrl storyboardUrl mp4Url playbackUrl progress { percent stage fps etaSeconds } } }";
    let (_, body) = app.graphql_as(&Credentials::Anonymous, QUERY, json!({ "id": id.to_string() })).await;
    let video = &body["data"]["video"];
    let playlist = |name: &str| app.url(&format!("/media/{id}/hls/{name}/index.m3u8"));
    assert_eq!(
        video["renditions"],
        json!([
            { "name": "720p", "width": 1280, "height": 720, "bitrate": 2_880_000, "playlistUrl": playlist("720p") },
            { "name": "360p", "width": 640, "height": 360, "bitrate": 1_440_000, "playlistUrl": playlist("360p") },
        ]),
        "{body}"
    );
    assert!(video["progress"].is_null(), "no running job: {body}");
    for field in ["thumbnailUrl", "storyboardUrl", "mp4Url", "playbackUrl"] {
        assert!(video[field].is_null(), "{field} exists only once the video is READY");
    }

    running_job(db, &owner, id, 42.5).await;
    let (_, body) = app.graphql_as(&Credentials::Anonymous, QUERY, json!({ "id": id.to_string() })).await;
    assert_eq!(
        body["data"]["video"]["progress"],
        json!({ "percent": 42.5, "stage": "encoding", "fps": 120.0, "etaSeconds": 8.0 }),
        "{body}"
    );
}

#[actix_web::test]
async fn concurrent_deletes_of_one_video_delete_it_once() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    for round in 0..3 {
        let id = create_titled(&app, &owner, &format!("contested {round}"), "PUBLIC").await;
        let variables = json!({ "id": id.to_string() });
        let (as_owner, as_moderator) = (owner.bearer(), moderator.bearer());
        let ((_, first), (_, second)) = futures::join!(
            app.graphql_as(&as_owner, DELETE, variables.clone()),
            app.graphql_as(&as_moderator, DELETE, variables.clone()),
        );
        let mut outcomes = [first, second]
            .iter()
            .map(|body| match error_code(body) {
                Some(code) => code,
                None => body["data"]["deleteVideo"].to_string(),
            })
            .collect::<Vec<_>>();
        outcomes.sort();
        assert_eq!(outcomes, ["NOT_FOUND", "true"], "round {round}");
        let events = entities::event_outbox::Entity::find()
            .filter(entities::event_outbox::Column::VideoId.eq(id))
            .all(&app.state.db)
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "round {round}: one DELETED event");
        let jobs = job::Entity::find().filter(job::Column::VideoId.eq(id)).all(&app.state.db).await.unwrap();
        assert_eq!(jobs.len(), 1, "round {round}: one cleanup job");
    }
}

#[actix_web::test]
async fn deleting_a_video_ends_its_multipart_upload_and_its_owner_cannot_stop_the_cleanup() {
    let app = spawn_app_with(|s| {
        crate::uploads::short_s3_prefix(s);
        s.uploads.multipart_threshold_bytes = 5 * 1024 * 1024;
        s.uploads.part_size_bytes = 5 * 1024 * 1024;
        s.workers.embedded = false;
    })
    .await;
    let owner = app.register_user().await;
    let id = create_titled(&app, &owner, "multipart", "PRIVATE").await;
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            "mutation($i: CreateUploadInput!) { createUpload(input: $i) { id method parts { number url } } }",
            json!({ "i": { "videoId": id.to_string(), "filename": "big.mp4", "contentType": "video/mp4", "size": 12 * 1024 * 1024 } }),
        )
        .await;
    let ticket = &body["data"]["createUpload"];
    assert_eq!(ticket["method"], "MULTIPART", "{body}");
    let part = app.client.put(ticket["parts"][0]["url"].as_str().unwrap()).body(vec![7u8; 5 * 1024 * 1024]);
    assert!(part.send().await.unwrap().status().is_success());
    let row = upload::Entity::find().filter(upload::Column::VideoId.eq(id)).one(&app.state.db).await.unwrap().unwrap();
    let upload_id = row.s3_upload_id.clone().unwrap();
    assert_eq!(app.state.store.list_parts(&row.object_key, &upload_id).await.unwrap().len(), 1);

    let (_, body) = app
        .graphql_as(&owner.bearer(), "mutation($id: ID!) { deleteVideo(id: $id) }", json!({ "id": id.to_string() }))
        .await;
    assert_eq!(body["data"]["deleteVideo"], true, "{body}");
    // The unfinished multipart upload is aborted (its parts are not objects under
    // the video's prefix, so the delete job would never see them).
    // (S3 answers NoSuchUpload; s3s-fs lists no parts.)
    let aborted = crate::helpers::eventually(100, || async {
        app.state.store.list_parts(&row.object_key, &upload_id).await.map_or(true, |parts| parts.is_empty())
    })
    .await;
    assert!(
        aborted,
        "the multipart upload of a deleted video is aborted: {:?}",
        app.state.store.list_parts(&row.object_key, &upload_id).await
    );

    // The owner cannot cancel or retry the object removal job.
    let cleanup = job::Entity::find()
        .filter(job::Column::VideoId.eq(id))
        .filter(job::Column::Kind.eq(JobKind::DeleteObjects))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    for mutation in
        ["mutation($id: ID!) { cancelJob(id: $id) { id } }", "mutation($id: ID!) { retryJob(id: $id) { id } }"]
    {
        let (_, body) = app.graphql_as(&owner.bearer(), mutation, json!({ "id": cleanup.id.to_string() })).await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{mutation}: {body}");
    }
    let still = job::Entity::find_by_id(cleanup.id).one(&app.state.db).await.unwrap().unwrap();
    assert_eq!(still.status, JobStatus::Queued);
}

/// A page of videos asks for renditions, progress and stats of every video at once
/// (batched: one query per field for the page); each video still gets its own.
#[actix_web::test]
async fn a_list_gets_each_videos_own_renditions_progress_and_stats() {
    // No worker may lease the jobs this test marks as running.
    let app = spawn_app_with(|settings| settings.workers.embedded = false).await;
    let owner = app.register_user().await;
    let db = &app.state.db;
    let two_rungs = create_titled(&app, &owner, "two rungs", "PUBLIC").await;
    let one_rung = create_titled(&app, &owner, "one rung", "PRIVATE").await;
    let encoding = create_titled(&app, &owner, "encoding", "UNLISTED").await;
    create_titled(&app, &owner, "nothing yet", "PUBLIC").await;
    add_renditions(
        db,
        two_rungs,
        &[("480p", 480, entities::RenditionStatus::Ready), ("1080p", 1080, entities::RenditionStatus::Ready)],
    )
    .await;
    add_renditions(
        db,
        one_rung,
        &[("360p", 360, entities::RenditionStatus::Ready), ("720p", 720, entities::RenditionStatus::Failed)],
    )
    .await;
    add_renditions(db, encoding, &[("720p", 720, entities::RenditionStatus::Pending)]).await;
    running_job(db, &owner, encoding, 10.0).await;
    // The most recent running job's report wins.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    running_job(db, &owner, encoding, 64.0).await;
    running_job(db, &owner, one_rung, 99.0).await;
    for (video, day, views, seconds) in
        [(two_rungs, 1, 3, 90.0), (two_rungs, 2, 2, 30.5), (one_rung, 2, 7, 700.0), (encoding, 1, 0, 0.0)]
    {
        entities::video_daily_stat::ActiveModel {
            video_id: Set(video),
            day: Set(chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap()),
            views: Set(views),
            watch_seconds: Set(seconds),
        }
        .insert(db)
        .await
        .unwrap();
    }

    const LIST: &str = "{ videos(first: 10, filter: { mine: true }) { edges { node { title \
        renditions { name } progress { percent } stats { views watchSeconds } } } } }";
    let (_, body) = app.graphql_as(&owner.bearer(), LIST, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let got: Vec<Value> =
        body["data"]["videos"]["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()).collect();
    assert_eq!(
        got,
        vec![
            json!({ "title": "nothing yet", "renditions": [], "progress": null,
                    "stats": { "views": 0, "watchSeconds": 0.0 } }),
            json!({ "title": "encoding", "renditions": [], "progress": { "percent": 64.0 },
                    "stats": { "views": 0, "watchSeconds": 0.0 } }),
            json!({ "title": "one rung", "renditions": [{ "name": "360p" }], "progress": { "percent": 99.0 },
                    "stats": { "views": 7, "watchSeconds": 700.0 } }),
            json!({ "title": "two rungs", "renditions": [{ "name": "1080p" }, { "name": "480p" }], "progress": null,
                    "stats": { "views": 5, "watchSeconds": 120.5 } }),
        ],
        "{body}"
    );
    // The same fields for one video answer the same as in the list.
    let (_, body) = app
        .graphql_as(
            &owner.bearer(),
            "query($id: ID!) { video(id: $id) { renditions { name } progress { percent } stats { views } } }",
            json!({ "id": one_rung.to_string() }),
        )
        .await;
    assert_eq!(
        body["data"]["video"],
        json!({ "renditions": [{ "name": "360p" }], "progress": { "percent": 99.0 }, "stats": { "views": 7 } }),
        "{body}"
    );
}

/// Moderators (and admins) hide, unhide and delete other people's videos; they do not
/// publish them, rewrite them, re-transcode them or replace their source.
#[actix_web::test]
async fn staff_may_not_publish_edit_or_replace_the_source_of_others_videos() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let private = create_titled(&app, &owner, "private", "PRIVATE").await;
    for role in [Role::Moderator, Role::Admin] {
        let staff = app.create_user_with_role(role).await;
        for input in [json!({ "visibility": "PUBLIC" }), json!({ "title": "moderated" }), json!({ "tags": ["x"] })] {
            let (_, body) =
                app.graphql_as(&staff.bearer(), UPDATE, json!({ "id": private.to_string(), "input": input })).await;
            assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{role:?} updating {input}: {body}");
        }
        let (_, body) = app
            .graphql_as(
                &staff.bearer(),
                "mutation($i: CreateUploadInput!) { createUpload(input: $i) { id } }",
                json!({ "i": { "videoId": private.to_string(), "filename": "x.mp4", "contentType": "video/mp4", "size": 1024 } }),
            )
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{role:?} replacing the source: {body}");
        let hide = "mutation($id: ID!) { hideVideo(id: $id, reason: \"spam\") { hidden } }";
        let (_, body) = app.graphql_as(&staff.bearer(), hide, json!({ "id": private.to_string() })).await;
        assert_eq!(body["data"]["hideVideo"]["hidden"], true, "{role:?} hides: {body}");
        let unhide = "mutation($id: ID!) { unhideVideo(id: $id) { hidden } }";
        let (_, body) = app.graphql_as(&staff.bearer(), unhide, json!({ "id": private.to_string() })).await;
        assert_eq!(body["data"]["unhideVideo"]["hidden"], false, "{role:?} unhides: {body}");
    }
    let stored = load_video(&app, private).await;
    assert_eq!(stored.visibility, entities::Visibility::Private);
    assert_eq!(stored.title, "private");
    assert!(stored.tags.0.is_empty());
    assert!(upload::Entity::find()
        .filter(upload::Column::VideoId.eq(private))
        .one(&app.state.db)
        .await
        .unwrap()
        .is_none());
    let moderator = app.create_user_with_role(Role::Moderator).await;
    let (_, body) = app.graphql_as(&moderator.bearer(), DELETE, json!({ "id": private.to_string() })).await;
    assert_eq!(body["data"]["deleteVideo"], true, "moderators still delete: {body}");
}
