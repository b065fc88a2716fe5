import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from jax.scipy.special import logsumexp

PI = jnp.pi

def target_score(cy, margin):
    kind = margin[0]
    if kind == "none":
        return cy
    if kind == "additive":
        return cy - margin[1]
    theta = jnp.arccos(cy)
    if kind == "angular":
        m, beyond = margin[1], margin[2]
        if beyond == "easy":
            return jnp.where(cy > 0, jnp.cos(theta + m), cy)
        inside = theta + m <= PI
        if beyond == "clip":
            return jnp.where(inside, jnp.cos(theta + m), -1.0)
        if beyond == "fallback":
            return jnp.where(inside, jnp.cos(theta + m), cy - m * jnp.sin(m))
    if kind == "multiplicative":
        m, lam = margin[1], margin[2]
        k = jnp.minimum(jnp.floor(jax.lax.stop_gradient(m * theta / PI)), m - 1)
        psi = (-1.0) ** k * jnp.cos(m * theta) - 2.0 * k
        return (lam * cy + psi) / (1.0 + lam)
    if kind == "combined":
        m1, m2, m3, beyond = margin[1:]
        phi = m1 * theta + m2
        if beyond == "easy":
            return jnp.where(cy > 0, jnp.cos(phi) - m3, cy)
        inside = phi <= PI
        if beyond == "clip":
            return jnp.where(inside, jnp.cos(phi) - m3, -1.0 - m3)
        if beyond == "fallback":
            return jnp.where(inside, jnp.cos(phi) - m3, cy - m2 * jnp.sin(m2) - m3)
    raise ValueError(margin)

def row_losses_and_mask(c, y, s, t, margin, indicator):
    B, K = c.shape
    cy = c[jnp.arange(B), y]
    f = target_score(cy, margin)
    onehot = jax.nn.one_hot(y, K, dtype=c.dtype)
    mask = jax.lax.stop_gradient(jnp.where((f[:, None] < c) & (onehot == 0), 1.0, 0.0))
    if indicator == "adaptive":
        g = s * (t - 1.0) * (c + 1.0) * mask
    else:
        g = s * (t - 1.0) * mask
    z = jnp.where(onehot == 1, (s * f)[:, None], s * c + g)
    L = logsumexp(z, axis=1) - s * f
    return L, mask, f

def case(name, c, y, s, t, margin, indicator="adaptive"):
    c = jnp.array(c, dtype=jnp.float64)
    y = jnp.array(y)
    mean_loss = lambda cc: jnp.mean(row_losses_and_mask(cc, y, s, t, margin, indicator)[0])
    L, mask, f = row_losses_and_mask(c, y, s, t, margin, indicator)
    grad = jax.grad(mean_loss)(c)
    for i in range(c.shape[0]):
        for k in range(c.shape[1]):
            if k != int(y[i]) and abs(float(f[i]) - float(c[i, k])) <= 1e-9:
                print(f"TIE: {name} row {i} col {k}: f={float(f[i])!r} c={float(c[i,k])!r}")
    r = lambda x: float(f"{float(x):.17g}")
    return {
        "name": name,
        "loss": r(jnp.mean(L)),
        "row_losses": [r(v) for v in L],
        "grad_cosines": [[r(v) for v in row] for row in grad],
        "mask": [[int(v) for v in row] for row in mask],
        "target_scores": [r(v) for v in f],
    }

A = [[0.3, 0.8, -0.1, 0.25]]
Bc = [[-0.95, -0.97, 0.1, -0.99]]
D = [[0.6, 0.7, -0.3, 0.1], [-0.4, 0.2, 0.5, -0.9]]
out = [
    case("angular-basic", A, [0], 32, 1.2, ("angular", 0.5, "clip")),
    case("angular-clip", Bc, [0], 16, 1.3, ("angular", 0.5, "clip")),
    case("angular-fallback", Bc, [0], 16, 1.3, ("angular", 0.5, "fallback")),
    case("angular-easy", Bc, [0], 16, 1.3, ("angular", 0.5, "easy")),
    case("angular-easy-positive", A, [0], 32, 1.2, ("angular", 0.5, "easy")),
    case("multiplicative-4", D, [0, 3], 16, 1.2, ("multiplicative", 4, 0.0)),
    case("multiplicative-4-lambda5", D, [0, 3], 16, 1.2, ("multiplicative", 4, 5.0)),
    case("multiplicative-3-row", [[-0.2, 0.9, -0.95]], [0], 8, 1.4, ("multiplicative", 3, 0.0)),
    case("combined", [[0.4, 0.5, -0.6], [0.9, 0.95, 0.1]], [0, 0], 30, 1.2, ("combined", 0.9, 0.4, 0.15, "fallback")),
    case("combined-beyond-fallback", [[-0.9, -0.95, 0.2]], [0], 10, 1.1, ("combined", 1.0, 0.5, 0.1, "fallback")),
    case("combined-beyond-clip", [[-0.9, -0.95, 0.2]], [0], 10, 1.1, ("combined", 1.0, 0.5, 0.1, "clip")),
    case("fixed-am", [[0.2, 0.5, 0.1, -0.3], [0.7, 0.1, 0.65, 0.2]], [2, 0], 20, 1.25, ("additive", 0.3), "fixed"),
    case("am-s64-t15", [[1.0, -1.0, 0.99, 0.5], [-1.0, 1.0, 0.3, 0.2]], [1, 0], 64, 1.5, ("additive", 0.35)),
    case("plain-softmax-check", [[0.1, 0.2, 0.3]], [2], 10, 1.0, ("none",)),
]
with open("/tmp/jaxref/values.json", "w") as fh:
    fh.write("[\n" + ",\n".join(json.dumps(e) for e in out) + "\n]\n")
print("ok")
