"""Secret references: where a setting's secret is kept, resolved once per run and never written.

  env:NAME                       the variable NAME (the environment, then .env)
  file:/path                     the file's content, one trailing newline removed (Docker and
                                 Kubernetes secret mounts); a file others can write is refused
  aws-sm:<secret-id>[#<key>]     AWS Secrets Manager (boto3, the standard credential chain), the
                                 secret string, or one key of it when it is a JSON object

A reference that cannot be resolved raises UnresolvedReference with a sentence naming the
reference (never a value) and what to check; the run fails that unit and carries on with the rest.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping

SCHEMES = ("env:", "file:", "aws-sm:")
SM_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL_SECRETS_MANAGER"


class UnresolvedReference(Exception):
    """A secret reference could not be resolved; the message names the reference, never a value."""


def is_reference(value) -> bool:
    return isinstance(value, str) and value.startswith(SCHEMES)


class Resolver:
    """Resolves references for one run: each Secrets Manager secret is fetched at most once."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self._fetched: dict[str, str] = {}
        self._client = None

    def resolve(self, reference: str) -> str:
        if reference.startswith("env:"):
            return self._variable(reference[4:].strip())
        if reference.startswith("file:"):
            return self._file(reference[5:])
        if reference.startswith("aws-sm:"):
            return self._secrets_manager(reference)
        return reference

    def _variable(self, name: str) -> str:
        value = self.env.get(name)
        if value is None or not value.strip():
            raise UnresolvedReference(f"the reference env:{name} names a variable that is not set: set {name} in "
                                      "the environment or in .env")
        return value

    def _file(self, path: str) -> str:
        reference = f"file:{path}"
        try:
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                raise UnresolvedReference(f"the reference {reference} names a folder, not a file: point it at the "
                                          "secret's file")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UnresolvedReference(
                    f"the reference {reference} names a file others can write (mode {stat.S_IMODE(info.st_mode):04o}), "
                    f"so anyone could swap the secret: chmod go-w {path} (0400 or 0600 is best)")
            with open(path, encoding="utf-8") as handle:
                content = handle.read()
        except FileNotFoundError:
            raise UnresolvedReference(f"the reference {reference} names a file that does not exist: check the path "
                                      "and that the secret is mounted") from None
        except PermissionError:
            raise UnresolvedReference(f"the reference {reference} names a file this user cannot read: give the "
                                      "pipeline's user read access") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UnresolvedReference(f"the reference {reference} could not be read ({type(exc).__name__}): check "
                                      "the file") from None
        value = content[:-1] if content.endswith("\n") else content
        if not value.strip():
            raise UnresolvedReference(f"the reference {reference} names an empty file: put the secret in it")
        return value

    def _secrets_manager(self, reference: str) -> str:
        secret_id, _, key = reference[len("aws-sm:"):].partition("#")
        if not secret_id:
            raise UnresolvedReference(f"the reference {reference} names no secret: write aws-sm:<secret-id> or "
                                      "aws-sm:<secret-id>#<json-key>")
        if secret_id not in self._fetched:
            self._fetched[secret_id] = self._fetch(secret_id, reference)
        text = self._fetched[secret_id]
        if not key:
            return text
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise UnresolvedReference(f"the reference {reference} asks for the key {key!r}, but the secret is not a "
                                      "JSON object: drop the #key or store the secret as JSON")
        value = document.get(key)
        if not isinstance(value, str) or not value:
            raise UnresolvedReference(f"the reference {reference}: the secret has no key {key!r} with a text value; "
                                      f"its keys are {', '.join(sorted(document)) or '(none)'}")
        return value

    def _fetch(self, secret_id: str, reference: str) -> str:
        import botocore.exceptions  # only runs that use aws-sm: references load boto3

        try:
            answer = self._sm().get_secret_value(SecretId=secret_id)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            why = {"ResourceNotFoundException": "there is no such secret (check the id and the region, AWS_REGION)",
                   "AccessDeniedException": "access was denied (the credentials need secretsmanager:GetSecretValue "
                                            "on it, and kms:Decrypt on its key)",
                   "DecryptionFailure": "it could not be decrypted (check the KMS key's policy)"}.get(
                code, f"Secrets Manager refused ({code or 'an error'})")
            raise UnresolvedReference(f"the reference {reference} could not be resolved: {why}") from None
        except botocore.exceptions.NoRegionError:
            raise UnresolvedReference(f"the reference {reference} could not be resolved: no AWS region is set: set "
                                      "AWS_REGION") from None
        except botocore.exceptions.NoCredentialsError:
            raise UnresolvedReference(f"the reference {reference} could not be resolved: no AWS credentials were "
                                      "found (environment, shared files, or an instance or task role)") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise UnresolvedReference(f"the reference {reference} could not be resolved: Secrets Manager did not "
                                      f"answer after its retries ({type(exc).__name__}); check the network, the "
                                      f"region and {SM_ENDPOINT_VARIABLE}") from None
        text = answer.get("SecretString")
        if not isinstance(text, str) or not text:
            raise UnresolvedReference(f"the reference {reference} names a binary or empty secret: store it as text")
        return text

    def _sm(self):
        """A Secrets Manager client: AWS's endpoint, or AWS_ENDPOINT_URL_SECRETS_MANAGER, never the
        object store's (AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_S3 point elsewhere: MinIO, R2)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(ignore_configured_endpoint_urls=True, retries={"max_attempts": 4, "mode": "standard"},
                            connect_timeout=5, read_timeout=10)
            endpoint = (self.env.get(SM_ENDPOINT_VARIABLE) or "").strip() or None
            given = {name: (self.env.get(variable) or "").strip() or None for name, variable in (
                ("aws_access_key_id", "AWS_ACCESS_KEY_ID"), ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                ("aws_session_token", "AWS_SESSION_TOKEN"), ("region_name", "AWS_REGION"))}
            given["region_name"] = given["region_name"] or (self.env.get("AWS_DEFAULT_REGION") or "").strip() or None
            session = boto3.session.Session(**given)  # unset ones fall back to the standard chain
            self._client = session.client("secretsmanager", endpoint_url=endpoint, config=config)
        return self._client
