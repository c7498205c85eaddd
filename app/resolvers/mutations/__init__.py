"""One mixin per aggregate, composed into the schema's Mutation type."""

import strawberry

from app.resolvers.mutations.auth import AuthMutations
from app.resolvers.mutations.billing import BillingMutations
from app.resolvers.mutations.controls import ControlMutations
from app.resolvers.mutations.distribution import BatchMutations, DistributionMutations
from app.resolvers.mutations.leads import LeadMutations
from app.resolvers.mutations.niches import NicheMutations
from app.resolvers.mutations.provider_users import ProviderUserMutations
from app.resolvers.mutations.returns import ReturnMutations
from app.resolvers.mutations.webhooks import WebhookMutations


@strawberry.type
class Mutation(
    AuthMutations,
    ProviderUserMutations,
    NicheMutations,
    BillingMutations,
    ControlMutations,
    LeadMutations,
    DistributionMutations,
    BatchMutations,
    ReturnMutations,
    WebhookMutations,
):
    pass
