"""Scan files for credentials; exit 1 and list them if any is found.

Usage: python tools/scan_secrets.py [FILE ...]   (no files: every file git tracks)

detect-secrets with its pattern detectors (AWS keys, private keys, GitHub, Slack, Stripe, ...) plus
our own for Shopify and eBay tokens (tools/secret_patterns.py). Its entropy and keyword heuristics
are left out: on this code base they flag hashes and test names, and a scanner that cries wolf
gets switched off.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from detect_secrets import SecretsCollection
from detect_secrets.settings import transient_settings

PLUGIN_FILE = Path(__file__).resolve().with_name("secret_patterns.py")
PATTERN_DETECTORS = ["AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "DiscordBotTokenDetector",
                     "GitHubTokenDetector", "GitLabTokenDetector", "JwtTokenDetector", "MailchimpDetector",
                     "NpmDetector", "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector",
                     "SendGridDetector", "SlackDetector", "SquareOAuthDetector", "StripeDetector",
                     "TelegramBotTokenDetector", "TwilioKeyDetector"]
CUSTOM_DETECTORS = ["ShopifyTokenDetector", "EbayTokenDetector"]


def scan(files: list[str]) -> list[tuple[str, int, str]]:
    """(file, line, kind) for every credential found."""
    plugins = [{"name": name} for name in PATTERN_DETECTORS]
    plugins += [{"name": name, "path": f"file://{PLUGIN_FILE}"} for name in CUSTOM_DETECTORS]
    with transient_settings({"plugins_used": plugins}):
        found = SecretsCollection()
        found.scan_files(*files)
    return sorted((name, secret.line_number, secret.type) for name, secret in found)


def main(argv: list[str]) -> int:
    files = argv or subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if Path(f).is_file()]
    findings = scan(files)
    for name, line, kind in findings:
        print(f"{name}:{line}: {kind} found: remove it (and rotate it if it was real)")
    if not findings:
        print(f"secret scan: {len(files)} files, no credentials found")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
