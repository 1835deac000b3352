"""The graph convolutional network of Sequential GCN (Caramalau et al., CVPR'21): two graph
convolutions A (X W) + b with ReLU and dropout in between, a sigmoid output per node.

The adjacency is never formed. Its definition, A = F F^T - I column-normalised, plus I, is linear
in F F^T, so A Y = F (F^T (Y / c)) - Y / c + Y with c the column sums of F F^T - I: O(M D) memory
and time per product instead of O(M^2) (M nodes, D feature dimensions)."""

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
    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x, adjacency):
        return adjacency @ nn.functional.linear(x, self.linear.weight) + self.linear.bias


class GCN(nn.Module):
    """nfeat -> hidden (ReLU, dropout) -> 1, sigmoid: P(node is labeled). ``forward`` returns
    (probability, hidden features, pre-sigmoid output)."""

    def __init__(self, in_features, hidden=128, dropout=0.3):
        super().__init__()
        self.gc1, self.gc2 = GraphConvolution(in_features, hidden), GraphConvolution(hidden, 1)
        self.dropout = dropout

    def forward(self, x, adjacency):
        hidden = torch.relu(self.gc1(x, adjacency))
        out = self.gc2(nn.functional.dropout(hidden, self.dropout, self.training), adjacency)[:, 0]
        return torch.sigmoid(out), hidden, out
