"""Strategies with networks of their own: VAAL and WAAL (trained alongside the task model by a
``utils.samplers.hooks`` hook), UncertainGCN and CoreGCN (a GCN trained at query time) and
ASAL (a GAN trained at query time)."""

import torch
from torch import nn

from models.gan import Discriminator, Generator
from models.gcn import GCN, FactorisedAdjacency
from models.waal import critic_input
from utils.core.config import Key
from utils.core.progress import stage_counter
from utils.samplers.diversity import kcenter_greedy, nearest_unique
from utils.samplers.hooks import VAALHook, WAALHook, resize
from utils.samplers.registry import QueryContext, register_scorer, register_selector
from utils.samplers.uncertainty import entropy_scores

GCN_SUBSET = 10_000  # unlabeled nodes per query (SeqGCN's SUBSET), drawn at random


@register_scorer("VAAL", training=VAALHook)
def vaal(ctx: QueryContext) -> torch.Tensor:
    """The lowest discriminator 'labeled' probability D(mu(x)) first (Sinha et al., Sec. 3.2)."""
    vae, discriminator = ctx.extras["vae"], ctx.extras["discriminator"]
    discriminator.eval()
    probability = ctx.predict(lambda d, _y: d, model=vae,
                              forward=lambda x: discriminator(vae.encode(resize(x, ctx.extras["vae_size"]))[0]))
    return -probability


def waal_scores(probs: torch.Tensor, critic_values: torch.Tensor, selection_weight: float = 10.0) -> torch.Tensor:
    """WAAL's query score (negated: higher = queried first): s = u - 10 d with u the mean of the
    L2 and L1 uncertainty upper bounds, 1/2 ||log p||_2 + 1/2 sum_c -log p_c, and d the critic's
    output; the smallest s is queried (as the authors' and the toolkit's code)."""
    log_p = probs.clamp_min(1e-12).log()
    upper_bound = 0.5 * log_p.norm(dim=1) + 0.5 * (-log_p).sum(dim=1)
    return -(upper_bound - selection_weight * critic_values)


@register_scorer("WAAL", training=WAALHook)
def waal(ctx: QueryContext) -> torch.Tensor:
    """``waal_scores`` of the eval-mode softmax and critic; the critic reads the feature extractor's
    output (``models.waal.critic_input``), as in training."""
    critic = ctx.extras["critic"].eval()

    def both(out, _y):
        return torch.cat([torch.softmax(out.logits.float(), 1), critic(critic_input(ctx.model, out))[:, None]], dim=1)

    joined = ctx.predict(both)
    return waal_scores(joined[:, :-1], joined[:, -1])


def train_gcn(features: torch.Tensor, is_labeled: torch.Tensor, hidden: int = 128, dropout: float = 0.3,
              weight: float = 1.2, epochs: int = 200,
              seed: int = 0) -> tuple[GCN, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """SeqGCN (Caramalau et al., CVPR'21, Sec. 3.2): a GCN over the graph of all nodes (cosine
    affinities, column-normalised, self-loops), trained to tell labeled from unlabeled nodes with
    -mean_L log s - lambda mean_U log(1 - s) (Eq. 4), 200 epochs of Adam 1e-3, weight decay 5e-4.
    Returns the model and its (probability, hidden, pre-sigmoid) outputs in eval mode. Under an active run a
    slow training reports ``[query] GCN training e/epochs epochs`` (``utils.core.loop``)."""
    torch.manual_seed(seed)
    adjacency = FactorisedAdjacency(features)
    model = GCN(features.shape[1], hidden, dropout).to(features.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    labeled = is_labeled.to(features.device)
    with stage_counter("query", "GCN training", epochs, "epochs") as report:
        for _ in range(epochs):
            model.train()
            probability = model(features, adjacency)[0].clamp(1e-7, 1 - 1e-7)
            loss = -probability[labeled].log().mean() - weight * (1 - probability[~labeled]).log().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            report.update(1)
    model.eval()
    with torch.no_grad():
        return model, model(features, adjacency)


def _gcn_nodes(ctx: QueryContext) -> tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    labeled = ctx.labeled_features()
    features = nn.functional.normalize(torch.cat([labeled, ctx.features()]).to(ctx.dist.device), dim=1)
    is_labeled = torch.zeros(len(features), dtype=torch.bool)
    is_labeled[: len(labeled)] = True
    params = ctx.params
    _, outputs = train_gcn(features, is_labeled, hidden=params.hidden_units, dropout=params.dropout_rate,
                           weight=params.lambda_loss, seed=int(ctx.rng.integers(2**31)))
    return len(labeled), outputs


GCN_PARAMS = {  # SeqGCN's settings, the toolkit's flags (UncertainGCN and CoreGCN)
    "HIDDEN_UNITS": Key(128, "GCN hidden width (UncertainGCN, CoreGCN)", minimum=1, flags=("--hidden_units|-n",)),
    "DROPOUT_RATE": Key(0.3, "GCN dropout (UncertainGCN, CoreGCN)", minimum=0, below=1, flags=("--dropout_rate|-r",)),
    "LAMBDA_LOSS": Key(1.2, "GCN weight of the unlabeled term (UncertainGCN, CoreGCN)", minimum=0,
                       flags=("--lambda_loss|-l",)),
}


@register_selector("UncertainGCN", aliases=("uncertain_gcn",), pool_subset=GCN_SUBSET, prefix="GCN", params={
    **GCN_PARAMS, "S_MARGIN": Key(0.1, "UncertainGCN confidence margin", minimum=0, flags=("--s_margin|-s",))})
def uncertain_gcn(ctx: QueryContext) -> torch.Tensor:
    """The unlabeled nodes whose 'labeled' probability is closest to GCN_S_MARGIN (0.1)."""
    n_labeled, (probability, _, _) = _gcn_nodes(ctx)
    distance = (probability[n_labeled:] - ctx.params.s_margin).abs().cpu()
    return torch.argsort(distance, stable=True)[: ctx.query_size]


@register_selector("CoreGCN", aliases=("core_gcn",), pool_subset=GCN_SUBSET, prefix="GCN", params=GCN_PARAMS)
def core_gcn(ctx: QueryContext) -> torch.Tensor:
    """Greedy k-center on the GCN's features (hidden layer and pre-sigmoid output) from the labeled nodes."""
    n_labeled, (_, hidden, out) = _gcn_nodes(ctx)
    nodes = torch.cat([hidden, out[:, None]], dim=1)
    return kcenter_greedy(nodes[n_labeled:], nodes[:n_labeled], ctx.query_size)


ASAL_DEFAULTS = {"steps": 2000, "batch_size": 64, "latent": 100, "lr": 2e-4, "width": 64, "generated_per_query": 10}


def train_gan(images: torch.Tensor, steps: int, batch_size: int, latent: int, lr: float, generator: torch.Generator,
              width: int = 64) -> Generator:
    """A DCGAN on ``images`` (in [-1, 1]) with the non-saturating loss, Adam(lr, betas 0.5/0.999). Under an
    active run a slow training reports ``[query] ASAL GAN training s/steps steps`` (``utils.core.loop``)."""
    channels, side = images.shape[1], images.shape[-1]
    gen = Generator(channels, side, latent, width).to(images.device)
    disc = Discriminator(channels, side, width).to(images.device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    with stage_counter("query", "ASAL GAN training", steps, "steps") as report:
        for _ in range(steps):
            real = images[torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)]
            fake = gen(torch.randn(len(real), latent, device=images.device))
            d_real, d_fake = disc(real), disc(fake.detach())
            loss_d = bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            d_fake = disc(fake)
            loss_g = bce(d_fake, torch.ones_like(d_fake))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            report.update(1)
    return gen.eval()


@register_selector("ASAL", aliases=("adversarial_sampling",), pool_subset=GCN_SUBSET, params={
    "STEPS": Key(ASAL_DEFAULTS["steps"], "GAN training steps of ASAL per query", minimum=1,
                 flags=("--asal_steps|--asal-steps",))})
def asal(ctx: QueryContext) -> torch.Tensor:
    """ASAL (Mayer & Timofte, WACV'20): a GAN trained on the candidates generates
    ``generated_per_query`` x query-size images; the query-size ones with the highest entropy
    under the classifier are kept, and for each the nearest not yet taken real candidate in the
    classifier's feature space is queried (faiss)."""
    settings = {**ASAL_DEFAULTS, "steps": ctx.params.steps}
    data, device, transform = ctx.data, ctx.dist.device, ctx.data.eval_transform
    images, _, _ = data.train.__getitems__(ctx.candidates.tolist())
    side = max(8, -(-images.shape[-1] // 8) * 8)
    pixels = resize(images.float().to(device) / 127.5 - 1, side)  # the GAN's [-1, 1] image space
    generator = torch.Generator().manual_seed(int(ctx.rng.integers(2**31)))
    torch.manual_seed(int(ctx.rng.integers(2**31)))
    gen = train_gan(pixels, settings["steps"], settings["batch_size"], settings["latent"], settings["lr"], generator,
                    settings["width"])
    was_training = ctx.model.training
    with torch.no_grad():
        fake = gen(torch.randn(settings["generated_per_query"] * ctx.query_size, settings["latent"], device=device))
        model_input = (resize((fake + 1) / 2, data.image_size) - transform.mean) / transform.std
        out = ctx.model.eval()(model_input)
    ctx.model.train(was_training)
    return asal_select(torch.softmax(out.logits.float(), 1).cpu(), out.features.float().cpu(), ctx.features(),
                       ctx.query_size)


def asal_select(generated_probs: torch.Tensor, generated_features: torch.Tensor, pool_features: torch.Tensor,
                query_size: int) -> torch.Tensor:
    """ASAL's retrieval: the ``query_size`` generated samples with the highest entropy, and for
    each (most uncertain first) the nearest pool sample not yet taken. Returns pool positions."""
    uncertain = torch.argsort(entropy_scores(generated_probs), descending=True, stable=True)[:query_size]
    return torch.from_numpy(nearest_unique(pool_features.float().numpy(), generated_features[uncertain].numpy()))
