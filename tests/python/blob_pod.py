"""A training pod's view of a Datastore access Secret: reads the blob with azure-storage-blob, then
tries to write. Env: the Secret's keys (AZURE_STORAGE_ACCOUNT_URL, AZURE_STORAGE_CONTAINER and
AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_TOKEN), BLOB_NAME; CA from REQUESTS_CA_BUNDLE.
Prints one JSON line: {"read": content or error code, "write": "ok" or error code}.
"""
import json
import os

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient


class StaticToken:
    """The pre-minted token of the Secret, as a credential."""

    def __init__(self, token, expires_on):
        self.token = AccessToken(token, int(expires_on))

    def get_token(self, *scopes, **kwargs):
        return self.token


if os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
    credential = os.environ["AZURE_STORAGE_SAS_TOKEN"]
else:
    credential = StaticToken(os.environ["AZURE_STORAGE_TOKEN"], os.environ["EXPIRES_ON"])
container = ContainerClient(os.environ["AZURE_STORAGE_ACCOUNT_URL"], os.environ["AZURE_STORAGE_CONTAINER"], credential=credential)
result = {}
try:
    result["read"] = container.download_blob(os.environ["BLOB_NAME"]).readall().decode()
except HttpResponseError as error:
    result["read"] = error.error_code or str(error.status_code)
try:
    container.upload_blob("written-by-pod.csv", b"x", overwrite=True)
    result["write"] = "ok"
except HttpResponseError as error:
    result["write"] = error.error_code or str(error.status_code)
print(json.dumps(result))
