"""A training pod's view of an Azure Files datastore access Secret: lists the share, reads a file with
azure-storage-file-share, then tries to create one. Env: the Secret's keys (AZURE_STORAGE_ACCOUNT_URL,
AZURE_STORAGE_SHARE, AZURE_STORAGE_SAS_TOKEN), FILE_NAME; CA from REQUESTS_CA_BUNDLE.
Prints one JSON line: {"list": [names] or error code, "read": content or error code,
"write": "ok" or error code}.
"""
import json
import os

from azure.core.exceptions import HttpResponseError
from azure.storage.fileshare import ShareClient

share = ShareClient(
    os.environ["AZURE_STORAGE_ACCOUNT_URL"],
    os.environ["AZURE_STORAGE_SHARE"],
    credential=os.environ["AZURE_STORAGE_SAS_TOKEN"],
)
result = {}
try:
    result["list"] = sorted(item["name"] for item in share.list_directories_and_files())
except HttpResponseError as error:
    result["list"] = error.error_code or str(error.status_code)
try:
    result["read"] = share.get_file_client(os.environ["FILE_NAME"]).download_file().readall().decode()
except HttpResponseError as error:
    result["read"] = error.error_code or str(error.status_code)
try:
    share.get_file_client("written-by-pod.csv").create_file(size=0)
    result["write"] = "ok"
except HttpResponseError as error:
    result["write"] = error.error_code or str(error.status_code)
print(json.dumps(result))
