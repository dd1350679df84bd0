//! The Users page: admins create, edit and disable users (errors beside the fields); other users
//! see only their own account.

use crate::support::{ui_test, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_and_others_see_themselves() {
    ui_test("users", async |ui| {
        let (bob, _) = ui.app.create_user("bob", false).await;
        ui.sign_in_admin().await;
        ui.click(".site-header a[href=\"/ui/users\"]").await;
        ui.wait_path("/ui/users").await;
        ui.wait_visible(&format!("#users-body tr[data-user-id=\"{bob}\"]"))
            .await;

        ui.click("#create-user").await;
        ui.wait_visible("#user-dialog").await;
        ui.fill("#user-loginName", "carol").await;
        ui.fill("#user-firstName", "Carol").await;
        ui.fill("#user-lastName", "Chen").await;
        ui.fill("#user-password", "short").await;
        ui.click("#user-save").await;
        ui.wait_contains(
            "#user-dialog [data-field=password] .field-error",
            "at least 8",
        )
        .await;
        ui.fill("#user-password", "carol-password").await;
        ui.click("#user-save").await;
        ui.wait_contains(".toast", "User carol saved.").await;
        ui.wait_contains("#users-body", "Carol Chen").await;
        ui.app.sign_in("carol", "carol-password").await;

        let bob_row = format!("#users-body tr[data-user-id=\"{bob}\"]");
        ui.click(&format!("{bob_row} [data-action=disable]")).await;
        ui.wait_contains("#confirm-message", "Disable bob?").await;
        ui.click("#confirm-ok").await;
        ui.wait_contains(".toast", "User bob disabled.").await;
        wait_for("bob to be disabled", || async {
            let gone = ui.count(&bob_row).await == 0;
            let disabled = ui
                .text(&bob_row)
                .await
                .is_some_and(|t| t.contains("Disabled"));
            (gone || disabled).then_some(())
        })
        .await;

        // carol (not an admin) sees her own account only, and may edit it.
        ui.click("#sign-out").await;
        ui.wait_path("/ui/sign-in").await;
        ui.sign_in("carol", "carol-password").await;
        ui.goto("/ui/users").await;
        ui.wait_contains("#list-size", "Your account").await;
        assert_eq!(ui.count("#users-body tr").await, 1);
        ui.wait_contains("#users-body", "carol").await;
        assert_eq!(ui.count("#users-body [data-action=disable]").await, 0);
        let hidden = ui
            .js(
                "return document.querySelector('#create-user').hidden;",
                vec![],
            )
            .await;
        assert_eq!(hidden, serde_json::json!(true));
        ui.click("#users-body [data-action=edit]").await;
        ui.fill("#user-lastName", "Chen-Smith").await;
        ui.click("#user-save").await;
        ui.wait_contains("#users-body", "Carol Chen-Smith").await;
    })
    .await;
}

/// The Users page's "Tokens" dialog (issue 15): an admin makes a token for a user (its secret shown
/// once, and it works), sees it listed without the secret, and revokes it (then it stops working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_make_list_and_revoke_a_users_api_tokens() {
    ui_test("users-tokens", async |ui| {
        let (bob, _) = ui.app.create_user("bob", false).await;
        ui.sign_in_admin().await;
        ui.goto("/ui/users").await;
        let bob_row = format!("#users-body tr[data-user-id=\"{bob}\"]");
        ui.wait_visible(&bob_row).await;
        ui.click(&format!("{bob_row} [data-action=tokens]")).await;
        ui.wait_visible("#tokens-dialog").await;
        ui.wait_contains("#tokens-body", "No API tokens.").await;
        ui.fill("#user-token-name", "bob-backup-script").await;
        ui.fill("#user-token-days", "30").await;
        ui.click("#token-create").await;
        ui.wait_visible("#new-token").await;
        let secret = wait_for("the new token's secret", || async {
            let value = ui
                .js("return document.querySelector('#new-token').value;", vec![])
                .await;
            value
                .as_str()
                .filter(|v| v.starts_with("lct_"))
                .map(str::to_string)
        })
        .await;
        ui.wait_contains("#tokens-body", "bob-backup-script").await;
        let listed = ui.text("#tokens-body").await.unwrap_or_default();
        assert!(!listed.contains(&secret), "the list never shows the secret");

        // The token works as bob.
        let status = |token: String| async move {
            ui.app
                .client
                .get(ui.app.url("/users"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(status(secret.clone()).await, 200);
        let tokens =
            crate::common::ok_json(ui.app.get(&format!("/api-tokens?userId={bob}")).await).await;
        assert_eq!(tokens[0]["name"], "bob-backup-script");
        assert!(
            tokens[0]["expiresAt"].as_i64().is_some(),
            "30 days were asked for"
        );

        ui.click("#tokens-body [data-action=revoke-token]").await;
        ui.wait_contains(".toast", "Token bob-backup-script revoked.")
            .await;
        ui.wait_contains("#tokens-body", "No API tokens.").await;
        assert_eq!(status(secret).await, 401);
    })
    .await;
}
