"""The graph convolutional network of Sequential GCN (Caramalau et al., CVPR'21): two graph
convolutions A (X W) + b with ReLU and dropout in between, a sigmoid output per node. Layers are
initialised as the authors' ``GraphConvolution`` (Kipf & Welling's): W [in, out] and b [out] both
uniform in +-1/sqrt(out), so the 1-output layer starts at +-1.

The adjacency is never formed. Its definition, A = F F^T - I column-normalised, plus I, is linear
in F F^T, so A Y = F (F^T (Y / c)) - Y / c + Y with c the column sums of F F^T - I: O(M D) memory
and time per product instead of O(M^2) (M nodes, D feature dimensions)."""

import math

import torch
from torch import nn


class FactorisedAdjacency:
    """A = (F F^T - I) diag(1/c) + I for L2-normalised node features F [M, D], as products."""

    def __init__(self, features):
        self.f = nn.functional.normalize(features.float(), dim=1)
        column_sums = self.f @ self.f.sum(0) - 1.0  # c_j = sum_i f_i . f_j - 1
        self.inv_c = 1.0 / torch.where(column_sums.abs() < 1e-12, torch.full_like(column_sums, 1e-12), column_sums)

    def __matmul__(self, y):
        scaled = y * self.inv_c[:, None]
        return self.f @ (self.f.T @ scaled) - scaled + y


class GraphConvolution(nn.Module):
    """A (X W) + b (Kipf & Welling, ICLR'17, Eq. 2), W [in, out] and b [out] drawn in that order from
    U(-1/sqrt(out), 1/sqrt(out)) as SeqGCN's ``GraphConvolution.reset_parameters``."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[1])  # the authors' stdv
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor, adjacency: FactorisedAdjacency) -> torch.Tensor:
        return adjacency @ (x @ self.weight) + self.bias


class GCN(nn.Module):
    """nfeat -> hidden (ReLU, dropout) -> 1, sigmoid: P(node is labeled). The authors' gc1 and gc3
    (their gc2 and final nn.Linear are defined but never used, and are left out). ``forward``
    returns (probability, hidden features, pre-sigmoid output)."""

    def __init__(self, in_features: int, hidden: int = 128, dropout: float = 0.3):
        super().__init__()
        self.gc1, self.gc2 = GraphConvolution(in_features, hidden), GraphConvolution(hidden, 1)
        self.dropout = dropout

    def forward(self, x: torch.Tensor,
                adjacency: FactorisedAdjacency) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.gc1(x, adjacency))
        out = self.gc2(nn.functional.dropout(hidden, self.dropout, self.training), adjacency)[:, 0]
        return torch.sigmoid(out), hidden, out
