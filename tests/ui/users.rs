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
