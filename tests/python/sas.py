"""Computes a SAS with the official azure-storage-blob (or azure-storage-file-share) for the inputs
in argv[1] (JSON), with the signed version set to the one the operator pins, and prints the query
string.

kind: service | account | user_delegation | file; times are strings as they appear in the SAS.
"""
import json
import sys

from azure.storage.blob import UserDelegationKey
from azure.storage.blob._shared.shared_access_signature import SharedAccessSignature
from azure.storage.blob._shared_access_signature import BlobSharedAccessSignature
from azure.storage.fileshare._shared_access_signature import FileSharedAccessSignature

args = json.loads(sys.argv[1])
kind = args["kind"]
common = dict(permission=args["permissions"], expiry=args["expiry"], start=args.get("start"), protocol=args.get("protocol"))
if kind == "file":
    sas = FileSharedAccessSignature(args["account"], account_key=args["key"])
    sas.x_ms_version = args["version"]
    common["ip"] = args.get("ip")
    if args.get("file"):
        directory, _, name = args["file"].rpartition("/")
        print(sas.generate_file(args["share"], directory_name=directory or None, file_name=name, **common))
    else:
        print(sas.generate_share(args["share"], **common))
    sys.exit(0)

if kind == "account":
    sas = SharedAccessSignature(args["account"], args["key"], x_ms_version=args["version"])
    print(sas.generate_account(services="b", resource_types=args["resource_types"], **common))
    sys.exit(0)

udk = None
if kind == "user_delegation":
    udk = UserDelegationKey()
    for name, value in args["udk"].items():
        setattr(udk, name, value)
sas = BlobSharedAccessSignature(args["account"], account_key=None if udk else args["key"], user_delegation_key=udk)
sas.x_ms_version = args["version"]
if args.get("blob"):
    print(sas.generate_blob(args["container"], args["blob"], **common))
else:
    print(sas.generate_container(args["container"], **common))
