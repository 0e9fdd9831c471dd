"""The grammars values must follow before they become Kubernetes objects.

Each check takes a plain value and returns it, or raises ValueError with a sentence saying
what is allowed; ``arguments`` turns them into pydantic types for the components' Args.
Every pattern is matched whole (``re.fullmatch``): ``re.match(r"^...$")`` would accept a
trailing newline.

Sources: Kubernetes names, label keys and values (k8s.io/apimachinery
pkg/util/validation/validation.go), quantities (pkg/api/resource/quantity.go), container
image references (github.com/distribution/reference reference.go).
"""

import re
from decimal import Decimal
from typing import Optional

INT32_MAX = 2**31 - 1
QUANTITY_MAX = 2**63 - 1
"""Schedulers compare quantities as 64-bit integers (of bytes, or of millicores for CPU)."""
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_WHITESPACE = re.compile(r"\s")

# Quantity: <signedNumber><suffix>, suffix binary SI, decimal SI or a decimal exponent.
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([KMGTPE]i|[mkMGTPE])|[eE]([+-]?[0-9]+))?")
_FACTORS = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{suffix: Decimal(1000) ** (i + 1) for i, suffix in enumerate("kMGTPE")},
    **{f"{suffix}i": Decimal(1024) ** (i + 1) for i, suffix in enumerate("KMGTPE")},
}

# Image reference: [domain/]path[:tag][@digest].
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|[-]+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?"
)
_SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
IMAGE_EXAMPLE = "vllm/vllm-openai:v0.34.0"


def single_line(value: str) -> str:
    """No control characters: a newline in a name, path or argument is always a mistake."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters such as a newline or tab")
    return value


def token(value: str) -> str:
    """A non-empty string without whitespace or control characters."""
    single_line(value)
    if not value or _WHITESPACE.search(value):
        raise ValueError("must be a non-empty string without spaces")
    return value


def command_word(value: str) -> str:
    """A token that becomes one word of a command line after an option that takes it: it must not
    start with '-', which the program's argument parser (argparse, for vllm serve and the staging
    script) would read as another option, e.g. --served-model-name --port=9000."""
    token(value)
    if value.startswith("-"):
        raise ValueError("must not start with '-': on the command line it would be read as another option")
    return value


def dns_label(value: str, max_length: int = DNS_LABEL_MAX) -> str:
    """A DNS-1123 label: namespaces and most object names used as DNS labels."""
    if len(value) > max_length or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or "
            f"digit, at most {max_length} characters"
        )
    return value


def dns_1035_label(value: str, max_length: int = DNS_LABEL_MAX) -> str:
    """A DNS-1035 label: Service names, which must start with a letter."""
    if len(value) > max_length or not _DNS_1035_LABEL.fullmatch(value):
        raise ValueError(
            "must be a DNS-1035 label: start with a lowercase letter, then lowercase letters, digits and '-', "
            f"at most {max_length} characters"
        )
    return value


def dns_subdomain(value: str, example: str = "nfs-client") -> str:
    """A DNS-1123 subdomain: the name of most Kubernetes objects, and host names."""
    labels = value.split(".")
    if len(value) > DNS_SUBDOMAIN_MAX or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            "must be a lowercase DNS name: labels of letters, digits and '-' separated by '.', "
            f"at most {DNS_SUBDOMAIN_MAX} characters, e.g. {example}"
        )
    return value


def host_name(value: str) -> str:
    """A host name for an Ingress or HTTPRoute: a DNS name, not an IP address."""
    dns_subdomain(value, example="vllm.example.com")
    if all(part.isdigit() for part in value.split(".")):
        raise ValueError("must be a DNS name, not an IP address (Ingress and HTTPRoute hosts cannot be IPs)")
    return value


def label_key(value: str) -> str:
    """A label or annotation key: [prefix/]name, the prefix a DNS subdomain."""
    prefix, _, name = value.rpartition("/")
    valid_name = len(name) <= DNS_LABEL_MAX and _QUALIFIED_NAME.fullmatch(name)
    valid_prefix = not prefix or _is_dns_subdomain(prefix)
    if "/" in prefix or not valid_name or not valid_prefix:
        raise ValueError(
            "must be a label key: an optional DNS-name prefix and '/', then at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit, e.g. release or example.com/team"
        )
    return value


def label_value(value: str) -> str:
    """A label value: empty, or at most 63 letters, digits, '-', '_' and '.'."""
    if value and (len(value) > DNS_LABEL_MAX or not _QUALIFIED_NAME.fullmatch(value)):
        raise ValueError(
            "must be a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit"
        )
    return value


def adapter_name(value: str) -> str:
    """A LoRA adapter's name: what clients pass as `model`, a directory name on the model volume,
    and the name in vllm's --lora-modules name=path (which reads an item holding ',' as JSON)."""
    if not value or len(value) > DNS_LABEL_MAX or not _QUALIFIED_NAME.fullmatch(value):
        raise ValueError(
            "must be an adapter name: at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit, e.g. sql-lora"
        )
    return value


def _is_dns_subdomain(value: str) -> bool:
    try:
        dns_subdomain(value)
    except ValueError:
        return False
    return True


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity's value in base units; ValueError if it is not one."""
    match = _QUANTITY.fullmatch(text)
    if not match:
        if bytes_unit := re.fullmatch(r"([0-9.]+)\s*([KkMGTPE])i?B", text):
            number, prefix = bytes_unit.group(1), bytes_unit.group(2).upper().replace("K", "k")
            binary = f"{number}{prefix.upper()}i"
            raise ValueError(f"{text!r} is not a Kubernetes quantity; did you mean {number}{prefix} or {binary}?")
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 500m, 8, 32Gi or 500G")
    number, suffix, exponent = match.groups()
    try:
        if exponent is not None:
            return Decimal(number) * Decimal(10) ** int(exponent)
        return Decimal(number) * _FACTORS[suffix or ""]
    except (ArithmeticError, ValueError):
        raise ValueError(f"{text!r} is out of range for a Kubernetes quantity") from None


def cpu_quantity(value: str) -> str:
    """CPU cores: a positive decimal quantity (4, 0.5, 500m); binary suffixes make no sense for cores."""
    amount = parse_quantity(value)
    if not re.fullmatch(r"[0-9.]+(m|k)?|[0-9.]+[eE][+-]?[0-9]+", value):
        raise ValueError("must be a number of CPU cores such as 4, 0.5 or 500m")
    millicores = amount.scaleb(3)
    if amount <= 0 or millicores != millicores.to_integral_value() or millicores > QUANTITY_MAX:
        raise ValueError("must be a positive number of CPU cores, in steps of 1m (e.g. 4, 0.5, 500m)")
    return value


def byte_quantity(value: str) -> str:
    """Memory or storage: a positive whole number of bytes (32Gi, 500G); 500m would mean half a byte."""
    amount = parse_quantity(value)
    if amount <= 0 or amount != amount.to_integral_value() or amount > QUANTITY_MAX:
        raise ValueError("must be a positive size in bytes such as 16Gi, 500Gi or 500G")
    return value


def image_reference(value: str) -> str:
    """A container image reference pinned by a tag other than latest, or by digest."""
    match = _IMAGE.fullmatch(value)
    # The first component is a registry only with a '.' or ':' or as localhost (as
    # distribution/reference's normalize.go splits it); otherwise it is a lowercase path.
    domain = match["domain"] if match else None
    if domain and not ("." in domain or ":" in domain or domain == "localhost"):
        match = None if domain != domain.lower() else match
    if not match or len(match["name"]) > 255:
        raise ValueError(
            "must be an image reference such as vllm/vllm-openai:v0.34.0 (lowercase repository, "
            "no spaces, an optional :tag and @sha256:<64 hex digits>)"
        )
    if match["digest"]:
        if not _SHA256_DIGEST.fullmatch(match["digest"]):
            raise ValueError("has a digest that is not sha256:<64 lowercase hex digits>")
        return value
    if not match["tag"]:
        raise ValueError(f"has no tag; pin a release, e.g. {IMAGE_EXAMPLE}, or a digest")
    if match["tag"] == "latest":
        raise ValueError(f"uses the moving tag latest; pin a release, e.g. {IMAGE_EXAMPLE}, or a digest")
    return value


def image_tag(value: str) -> Optional[str]:
    """The tag of a valid image reference, or None when it has none."""
    match = _IMAGE.fullmatch(value)
    return match["tag"] if match else None


def http_url(value: str) -> str:
    """An http:// or https:// URL with a host, on one line and without spaces."""
    token(value)
    if not re.fullmatch(r"https?://[^/?#\s]+(/[^\s]*)?", value):
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://modelscope.cn")
    return value


def path_segments(value: str, what: str) -> str:
    """Slash-separated names that cannot leave the directory they are joined to."""
    segment = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
    if not value or not all(segment.fullmatch(part) for part in value.split("/")):
        raise ValueError(
            f"must be {what}: names of letters, digits, '.', '_' and '-' (not starting with '.'), "
            "separated by '/'"
        )
    return value


def absolute_path(value: str) -> str:
    """A normalised absolute directory path other than /."""
    parts = value.split("/")
    if value == "/" or not value.startswith("/") or value.endswith("/") or any(p in ("", ".", "..") for p in parts[1:]):
        raise ValueError("must be a normalised absolute path such as /models (no '.', '..' or trailing '/')")
    single_line(value)
    return value


def file_name(value: str) -> str:
    """One file name: no '/', not '.' or '..'."""
    token(value)
    if "/" in value or value in (".", ".."):
        raise ValueError("must be a single file name, without '/'")
    return value


def secret_key(value: str) -> str:
    """A key inside a Secret or ConfigMap: letters, digits, '-', '_' and '.'."""
    if len(value) > DNS_SUBDOMAIN_MAX or not re.fullmatch(r"[-._a-zA-Z0-9]+", value) or value in (".", ".."):
        raise ValueError("must be a Secret key: letters, digits, '-', '_' and '.', e.g. api-key")
    return value


def port_name(value: str) -> str:
    """A container port name (IANA service name): at most 15 lowercase letters, digits and '-'."""
    valid = re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value) and re.search("[a-z]", value) and "--" not in value
    if len(value) > 15 or not valid:
        raise ValueError("must be a port name: at most 15 lowercase letters, digits and '-', with a letter, e.g. http")
    return value


def with_registry(reference: str, registry: str) -> str:
    """A valid image reference pulled from another registry (a mirror): its own registry, if any,
    replaced, e.g. vllm/vllm-openai:v0.34.0 -> harbor.internal/hub/vllm/vllm-openai:v0.34.0."""
    # Without '.', ':' or localhost the first component is a Docker Hub path, as
    # distribution/reference's normalize.go splits it.
    match = _IMAGE.fullmatch(reference)
    if match is None:
        raise ValueError(f"{reference!r} is not an image reference")
    domain = match["domain"]
    own_registry = domain and ("." in domain or ":" in domain or domain == "localhost")
    rest = reference[len(domain) + 1 :] if own_registry else reference
    if not own_registry and "/" not in match["name"]:
        rest = f"library/{rest}"  # Docker Hub's own images, as a mirror of it names them
    return f"{registry.rstrip('/')}/{rest}"


def registry(value: str) -> str:
    """A registry host, with an optional port and path, that image references can start with."""
    host = value.split("/")[0]
    try:
        image_reference(f"{value}/image:tag")
    except ValueError:
        host = ""
    if not ("." in host or ":" in host or host == "localhost"):
        raise ValueError("must be a registry such as harbor.internal or harbor.internal:5000/dockerhub")
    return value


def mig_profile(value: str) -> str:
    """A MIG profile as the device plugin names its resource (nvidia.com/mig-<profile>), e.g. 3g.40gb."""
    if not re.fullmatch(r"[1-9]\d?g\.\d+gb", value):
        raise ValueError("must be a MIG profile such as 1g.10gb or 3g.40gb")
    return value
