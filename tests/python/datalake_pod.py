"""A training pod's view of an ADLS Gen2 Datastore access Secret, through azure-storage-file-datalake:
reads a file of the filesystem. Env: the Secret's keys (AZURE_STORAGE_DFS_URL,
AZURE_STORAGE_FILESYSTEM, AZURE_STORAGE_SAS_TOKEN), FILE_PATH; CA from REQUESTS_CA_BUNDLE. The SDK
downloads through the blob endpoint, which is what Azurite serves.
Prints one JSON line: {"read": content or error code}.
"""
import json
import os

from azure.core.exceptions import HttpResponseError
from azure.storage.filedatalake import DataLakeServiceClient

service = DataLakeServiceClient(os.environ["AZURE_STORAGE_DFS_URL"], credential=os.environ["AZURE_STORAGE_SAS_TOKEN"])
file = service.get_file_system_client(os.environ["AZURE_STORAGE_FILESYSTEM"]).get_file_client(os.environ["FILE_PATH"])
result = {}
try:
    result["read"] = file.download_file().readall().decode()
except HttpResponseError as error:
    result["read"] = error.error_code or str(error.status_code)
print(json.dumps(result))
