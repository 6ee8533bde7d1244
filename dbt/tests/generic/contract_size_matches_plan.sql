{#-
  Fails for every meter contract that does not give exactly one contract size, in the unit its
  plan is priced by (tariff_plans.contract_unit: amperes or kva), as a positive number.
-#}
{% test contract_size_matches_plan(model, plans) %}

select
    contracts.source, contracts.plan_id, contracts.valid_from, contracts.contract_amperes,
    contracts.contract_kva, plans.contract_unit,
    'give contract_' || plans.contract_unit || ' (a positive number) and leave the other empty'
        as problem
from {{ model }} as contracts
join {{ plans }} as plans on plans.plan_id = contracts.plan_id
where case plans.contract_unit
        when 'amperes' then contracts.contract_amperes is null or contracts.contract_kva is not null
            or contracts.contract_amperes <= 0
        else contracts.contract_kva is null or contracts.contract_amperes is not null
            or contracts.contract_kva <= 0
    end

{% endtest %}
