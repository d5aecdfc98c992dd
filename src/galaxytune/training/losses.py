"""Losses for the question head: every Galaxy Zoo answer's votes (galaxytune.data.questions)."""

from __future__ import annotations

import torch


def dirichlet_multinomial_nll(
    logits: torch.Tensor, counts: torch.Tensor, slices: list[tuple[int, int]]
) -> torch.Tensor:
    """Mean over galaxies of the negative log-likelihood of each question's votes under a
    Dirichlet-multinomial (Walmsley et al. 2022, Zoobot), per vote cast.

    The head predicts a concentration per answer, in (1, 100) as in Zoobot. The Dirichlet
    carries the spread between volunteers, so a galaxy with 40 votes counts for more than one
    with 5, and a question nobody was asked (zero votes) costs exactly nothing. Dividing by the
    votes cast keeps the scale near a per-answer cross-entropy, whatever the vote depth.
    """
    concentration = 1 + 99 * torch.sigmoid(logits)
    total_nll = logits.new_zeros(logits.shape[0])
    for start, end in slices:
        alpha, k = concentration[:, start:end], counts[:, start:end]
        n, a0 = k.sum(1), alpha.sum(1)
        log_lik = (torch.lgamma(n + 1) + torch.lgamma(a0) - torch.lgamma(n + a0)
                   + (torch.lgamma(k + alpha) - torch.lgamma(alpha) - torch.lgamma(k + 1)).sum(1))
        total_nll = total_nll - log_lik
    return (total_nll / counts.sum(1).clamp(min=1)).mean()


def question_cross_entropy(
    logits: torch.Tensor, counts: torch.Tensor, slices: list[tuple[int, int]]
) -> torch.Tensor:
    """Mean over galaxies of the cross-entropy between each question's softmax and its vote
    fractions, summed over the questions the galaxy was asked."""
    total = logits.new_zeros(logits.shape[0])
    for start, end in slices:
        k = counts[:, start:end]
        n = k.sum(1, keepdim=True)
        fractions = k / n.clamp(min=1)
        total = total - (fractions * torch.log_softmax(logits[:, start:end], dim=1)).sum(1)
    return total.mean()


QUESTION_LOSSES = {"dirichlet": dirichlet_multinomial_nll, "cross_entropy": question_cross_entropy}
