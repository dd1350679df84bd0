"""Drives labcron with OpenSpecimenAPIconnector (PyPI), the way a user of that client would.

Usage: openspecimen_client.py HOST_URL ADMIN_PASSWORD SCRIPT_NAME
Run by tests/api/openspecimen_client.rs against a real server. Every step asserts what it got;
the last line printed is a JSON summary the Rust test checks against the server.
"""

import json
import sys

import OpenSpecimenAPIconnector as osc
from OpenSpecimenAPIconnector.config import config
from OpenSpecimenAPIconnector.os_core.query import query
from OpenSpecimenAPIconnector.os_core.req_util import OS_request_gen
from OpenSpecimenAPIconnector.os_core.users import users
from OpenSpecimenAPIconnector.os_util.users_util import user_util

host, admin_password, script = sys.argv[1], sys.argv[2], sys.argv[3]
base = host + "/openspecimen/rest/ng"
admin = ("admin", admin_password)

# The base URL without /rest/ng (what the README used to say) makes the client's sign-in fail.
try:
    config(base_url=host + "/openspecimen", auth=admin).check_login()
    raise SystemExit("sign-in with the base URL .../openspecimen unexpectedly worked")
except AssertionError:
    pass

# The package's shared configuration, as its documentation sets it up.
osc.config_manager.set_login(base, admin)
assert osc.config_manager.get_url() == base

req = OS_request_gen(admin)

# Scheduled jobs through the generic request helper (the client has no jobs module).
r = req.post_request(
    base + "/scheduled-jobs",
    data=json.dumps(
        {
            "name": "Connector job",
            "type": "EXTERNAL",
            "command": script,
            "repeatSchedule": "ONDEMAND",
            "rtArgsProvided": True,
        }
    ),
)
assert r.status_code == 200, r.text
job = r.json()
assert job["name"] == "Connector job" and job["type"] == "EXTERNAL", job

r = req.get_request(base + "/scheduled-jobs?query=Connector")
assert r.status_code == 200, r.text
assert [j["id"] for j in r.json()] == [job["id"]], r.text

r = req.post_request(
    base + "/scheduled-jobs/%d/runs" % job["id"], data=json.dumps({"args": "from-connector"})
)
assert r.status_code == 200, r.text
assert r.json()["id"] == job["id"], "OpenSpecimen's shape: the answer is the job"
run_id = int(r.headers["Location"].rsplit("/", 1)[1])

r = req.get_request(base + "/scheduled-jobs/%d/runs/%d?waitSeconds=60" % (job["id"], run_id))
assert r.status_code == 200, r.text
run = r.json()
assert run["status"] == "SUCCEEDED", run
assert run["rtArgs"] == "from-connector", run

r = req.get_request(base + "/scheduled-jobs/%d/runs" % job["id"])
assert r.status_code == 200, r.text
assert [x["id"] for x in r.json()] == [run_id], r.text

r = req.get_request(base + "/scheduled-jobs/%d/runs/%d/result-file" % (job["id"], run_id), stream=True)
assert r.status_code == 200, r.text
result = r.content.decode()

job["rtArgsHelpText"] = "any words"
r = req.put_request(base + "/scheduled-jobs/%d" % job["id"], data=json.dumps(job))
assert r.status_code == 200, r.text
assert r.json()["rtArgsHelpText"] == "any words", r.text

# Users: the client's own calls.
u = users()
all_users = u.get_all_users()
assert "admin" in [x["loginName"] for x in all_users], all_users

# user_util.create_user sends no password (OpenSpecimen mails a link); type NONE is a plain user.
created = user_util().create_user(
    first="Carla",
    last="Connector",
    email="carla@lab.example",
    login="carla",
    institute="Lab",
    type_="NONE",
)
assert created["loginName"] == "carla" and created["admin"] is False, created
carla_id = created["id"]
assert u.get_user(carla_id)["emailAddress"] == "carla@lab.example"

# Until a password is set, carla cannot sign in.
try:
    config(base_url=base, auth=("carla", "")).check_login()
    raise SystemExit("a user without a password could sign in")
except AssertionError:
    pass

# An admin sets it without the old one ...
changed = u.change_password(
    osc.Json_factory().change_user_pw_json(userid=carla_id, newpw="carla-password-1")
)
assert changed is True, changed
assert config(base_url=base, auth=("carla", "carla-password-1")).check_login()

# ... and carla changes her own with the old one (a wrong old one is refused).
carla = OS_request_gen(("carla", "carla-password-1"))
r = carla.put_request(
    base + "/users/password",
    data=json.dumps({"userId": carla_id, "oldPassword": "wrong-password", "newPassword": "carla-password-2"}),
)
assert r.status_code == 400 and r.json()[0]["code"] == "USER_INVALID_OLD_PASSWD", r.text
r = carla.put_request(
    base + "/users/password",
    data=json.dumps({"userId": carla_id, "oldPassword": "carla-password-1", "newPassword": "carla-password-2"}),
)
assert r.status_code == 200 and r.json() is True, r.text
# She may not change someone else's.
carla = OS_request_gen(("carla", "carla-password-2"))
r = carla.put_request(
    base + "/users/password", data=json.dumps({"userId": 1, "newPassword": "carla-was-here"})
)
assert r.status_code == 400 and r.json()[0]["code"] == "ACCESS_DENIED", r.text

updated = u.update_user(carla_id, json.dumps({"firstName": "Carla Maria"}))
assert updated["firstName"] == "Carla Maria", updated

# A user of OpenSpecimen type SUPER is an admin.
super_user = user_util().create_user(
    first="Sam", last="Super", email="sam@lab.example", login="sam", institute="Lab", type_="SUPER"
)
assert super_user["admin"] is True, super_user

# AQL queries are not served: the client gets an error, not a result.
aql = query().execute_aql(json.dumps({"cpId": -1, "aql": "select Participant.id"}))
assert isinstance(aql, list) and aql and "code" in aql[0], aql

print(
    json.dumps(
        {
            "jobId": job["id"],
            "runId": run_id,
            "result": result,
            "carlaId": carla_id,
            "samId": super_user["id"],
        }
    )
)
